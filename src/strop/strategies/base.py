"""The contract every update strategy meets."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class Strategy:
    """Base class: subclasses set `name` and override `apply` and `save`."""

    name = "base"
    #: Pydantic model of this strategy's own config keys (flat in the YAML), or None.
    params = None
    #: Trainable weights that must stay in float32 even when the frozen base is stored in bf16.
    upcast_trainable = True

    def load(self, model_path: str, cfg, device: torch.device) -> nn.Module:
        """Load the base model; strategies that quantize or shard the base override this."""
        from strop.models import load_model

        return load_model(model_path, torch.float32, cfg.trust_remote_code, cfg.model_type).to(device)

    def apply(self, model: nn.Module, cfg) -> nn.Module:
        raise NotImplementedError

    def build_optimizer(self, model: nn.Module, cfg, device: torch.device) -> torch.optim.Optimizer:
        """AdamW over the trainable parameters; strategies with their own update rule override this."""
        from strop.train.optim import build_optimizer

        return build_optimizer(list(self.trainable_parameters(model).values()), cfg, device)

    def on_step_start(self, model: nn.Module, step: int, cfg) -> None:
        """Called before every optimizer step (LISA resamples its layers here). Must be a pure function
        of (seed, step) so that resumed runs match."""

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
