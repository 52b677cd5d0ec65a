"""The contract every update strategy meets."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class Strategy:
    """Base class: subclasses set `name` and override `apply` and `save`."""

    name = "base"
    #: Trainable weights that must stay in float32 even when the frozen base is stored in bf16.
    upcast_trainable = True

    def apply(self, model: nn.Module, cfg) -> nn.Module:
        raise NotImplementedError

    def save(self, model: nn.Module, tokenizer, out_dir: Path) -> None:
        raise NotImplementedError

    def base_model(self, model: nn.Module) -> nn.Module:
        """The underlying transformers model (for generation settings and config)."""
        return model

    def trainable_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        return {name: p for name, p in model.named_parameters() if p.requires_grad}

    def count_parameters(self, model: nn.Module) -> tuple[int, int]:
        """(trainable, total) parameter counts."""
        total = sum(p.numel() for p in model.parameters())
        return sum(p.numel() for p in self.trainable_parameters(model).values()), total

    def upcast(self, model: nn.Module) -> None:
        if self.upcast_trainable:
            for param in self.trainable_parameters(model).values():
                if param.dtype != torch.float32:
                    param.data = param.data.float()
