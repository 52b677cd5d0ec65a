"""How much a quantized export changed the model: next-token agreement and perplexity on held-out text.

The exported folder is loaded the way a user loads it, with transformers' AutoModelForCausalLM (which
reads the compressed-tensors config and unpacks the int4 weights), and compared position by position
with the unquantized model on text the calibration did not see. Both run in float32 so that the
difference measured is the quantization's, not the arithmetic's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from strop.errors import StropError


@dataclass
class Quality:
    """Agreement: share of positions where both models pick the same next token (greedy)."""

    texts: int
    tokens: int
    agreement: float
    perplexity_reference: float
    perplexity_quantized: float

    def line(self) -> str:
        change = self.perplexity_quantized / self.perplexity_reference - 1
        return (
            f"quality on {self.texts} held-out text(s), {self.tokens} tokens: next-token agreement "
            f"{self.agreement:.3f}; perplexity {self.perplexity_reference:.2f} -> "
            f"{self.perplexity_quantized:.2f} ({change:+.1%})"
        )


def _load(folder: Path):
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    except (OSError, ValueError, ImportError) as err:
        raise StropError(f"transformers cannot load {folder}: {err}") from err
    return model.eval()


@torch.no_grad()
def compare(reference_dir: str | Path, quantized_dir: str | Path, texts: list[str], max_length: int = 512) -> Quality:
    """Run both models over `texts` (each cut to `max_length` tokens) and score the quantized one."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(quantized_dir))
    reference, quantized = _load(Path(reference_dir)), _load(Path(quantized_dir))
    same = tokens = used = 0
    nll_ref = nll_quant = 0.0
    for text in texts:
        ids = tokenizer(
            text, truncation=True, max_length=max_length, add_special_tokens=False, return_tensors="pt"
        ).input_ids
        if ids.shape[1] < 2:
            continue
        targets = ids[0, 1:]
        ref_logits = reference(ids).logits[0, :-1].float()
        quant_logits = quantized(ids).logits[0, :-1].float()
        same += int((ref_logits.argmax(-1) == quant_logits.argmax(-1)).sum())
        nll_ref += float(torch.nn.functional.cross_entropy(ref_logits, targets, reduction="sum"))
        nll_quant += float(torch.nn.functional.cross_entropy(quant_logits, targets, reduction="sum"))
        tokens += len(targets)
        used += 1
    if not tokens:
        raise StropError("the held-out text is too short for a quality check (fewer than two tokens)")
    return Quality(used, tokens, same / tokens, math.exp(nll_ref / tokens), math.exp(nll_quant / tokens))
