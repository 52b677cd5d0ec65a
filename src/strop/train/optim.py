"""Learning-rate schedule: linear warmup, then cosine, linear or constant."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from strop.config import Config


def warmup_steps(cfg: Config, total_steps: int) -> int:
    if cfg.warmup_steps is not None:
        return min(cfg.warmup_steps, total_steps)
    return int(math.ceil((cfg.warmup_ratio or 0.0) * total_steps))


def lr_factor(step: int, warmup: int, total: int, kind: str, options: dict | None = None) -> float:
    """Multiplier of the peak learning rate at `step`: linear warmup, then cosine/linear/constant, or
    warmup-stable-decay (Hu et al. 2024, MiniCPM): the peak held, then a cosine decay over the last
    `num_decay_steps` (or `decay_ratio` of all steps, default 0.1) down to `min_lr_ratio`."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if kind == "warmup_stable_decay":
        options = options or {}
        decay = options.get("num_decay_steps") or math.ceil(options.get("decay_ratio", 0.1) * total)
        floor = options.get("min_lr_ratio", 0.0)
        if step < total - decay:
            return 1.0
        progress = min(1.0, (step - (total - decay)) / max(1, decay))
        return floor + (1 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Config, total_steps: int) -> LambdaLR:
    warmup = warmup_steps(cfg, total_steps)
    options = getattr(cfg, "lr_scheduler_kwargs", None)
    return LambdaLR(optimizer, lambda step: lr_factor(step, warmup, total_steps, cfg.lr_scheduler, options))
