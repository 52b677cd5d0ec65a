"""The default optimizer of every strategy without its own update rule."""

from __future__ import annotations

import torch


def build_optimizer(params: list[torch.nn.Parameter], cfg, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; the fused CUDA kernel where the device has it (one launch for all parameters)."""
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                             eps=cfg.adam_epsilon, fused=fused)
