"""Optimizer, learning-rate schedule and mixed precision, chosen from the config and the device."""

from __future__ import annotations

import contextlib
import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from strop.errors import StropError


def build_optimizer(params: list[torch.nn.Parameter], cfg, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; the fused CUDA kernel where the device has it (one launch for all parameters)."""
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                             eps=cfg.adam_epsilon, fused=fused)


def warmup_steps(cfg, total_steps: int) -> int:
    if cfg.warmup_steps is not None:
        return min(cfg.warmup_steps, total_steps)
    return int(math.ceil((cfg.warmup_ratio or 0.0) * total_steps))


def lr_factor(step: int, warmup: int, total: int, kind: str) -> float:
    """Multiplier of the peak learning rate at `step`: linear warmup, then cosine/linear/constant."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if kind == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg, total_steps: int) -> LambdaLR:
    warmup = warmup_steps(cfg, total_steps)
    return LambdaLR(optimizer, lambda step: lr_factor(step, warmup, total_steps, cfg.lr_scheduler))


def autocast_dtype(cfg, device: torch.device) -> torch.dtype | None:
    """bf16 where the device computes it natively, fp16 only when asked (CUDA), else full precision."""
    if cfg.fp16:
        if device.type != "cuda":
            raise StropError("fp16: mixed precision with fp16 needs a CUDA device; use bf16 on the CPU")
        return torch.float16
    if cfg.bf16 is True:
        return torch.bfloat16
    if cfg.bf16 == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if device.type == "cpu" and torch.backends.cpu.get_cpu_capability() in {"AVX512", "AMX"}:
            return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
