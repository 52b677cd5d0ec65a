"""Finding the repeated decoder blocks of a transformers model (for strategies that reason per layer and
for adapters that sit inside each block)."""

from __future__ import annotations

from torch import nn


def decoder_layers(model: nn.Module, language_only: bool = False) -> tuple[str, nn.ModuleList]:
    """(qualified name, ModuleList) of the decoder blocks: the longest ModuleList in the model, which
    is `model.layers` for Llama/Qwen/Mistral, `transformer.h` for GPT-2, and so on. `language_only`
    skips a vision-language model's vision tower and projector, whose blocks may outnumber the decoder's."""
    from strop.vlm.models import part_of

    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if language_only and part_of(name) != "language":
            continue
        if isinstance(module, nn.ModuleList) and len(module) and (best is None or len(module) > len(best[1])):
            best = (name, module)
    if best is None:
        raise ValueError(f"{type(model).__name__}: no repeated decoder layers found")
    return best
