"""Full fine-tuning: every weight trains; the result is a complete HF model folder."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from strop.run_types import RunConfig
from strop.strategies.base import Strategy


class FullStrategy(Strategy):
    name = "full"
    supports_bf16_masters = True

    def adapt(self, model: nn.Module, cfg: RunConfig) -> nn.Module:
        for param in model.parameters():
            param.requires_grad_(True)
        return model

    def save(self, model: nn.Module, tokenizer, out_dir: Path) -> None:
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
