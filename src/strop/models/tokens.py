"""Axolotl's `special_tokens` and `tokens`: set the tokenizer's special tokens and add new tokens, then
grow the model's embeddings to match.

A token new to the vocabulary gets a fresh embedding row (transformers initialises it from the mean
and covariance of the existing rows). Such a row only learns if the embeddings train: full fine-tuning
does; an adapter does when `lora_modules_to_save` lists embed_tokens and lm_head (the plan says so).
"""

from __future__ import annotations

from torch import nn

from strop.errors import StropError
from strop.run_types import RunConfig

_SPECIAL = {"bos_token", "eos_token", "pad_token", "unk_token", "sep_token", "cls_token", "mask_token"}


def apply_tokens(tokenizer, cfg: RunConfig) -> list[str]:
    """Set special_tokens and add tokens on the tokenizer; returns the tokens that are new to it."""
    special = getattr(cfg, "special_tokens", None) or {}
    unknown = sorted(set(special) - _SPECIAL)
    if unknown:
        raise StropError(f"special_tokens: unknown name(s) {unknown} (known: {', '.join(sorted(_SPECIAL))})")
    before = set(tokenizer.get_vocab())
    if special:
        tokenizer.add_special_tokens(dict(special))
    extra = getattr(cfg, "tokens", None) or []
    if extra:
        tokenizer.add_tokens(list(extra))
    return [t for t in [*special.values(), *extra] if t not in before]


def fit_embeddings(model: nn.Module, tokenizer, multiple_of: int = 1) -> None:
    """Grow the embeddings to the tokenizer's size (rounded up to `multiple_of` rows: Axolotl's
    resize_token_embeddings_to_32x) and point the model's special ids at its tokens."""
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=multiple_of)
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            setattr(model.config, name, value)
            if getattr(model, "generation_config", None) is not None:
                setattr(model.generation_config, name, value)
