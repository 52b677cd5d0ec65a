"""Optimizer, learning-rate schedule and mixed precision, chosen from the config and the device."""

from __future__ import annotations

import contextlib
import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from strop.errors import StropError


#: Axolotl's optimizer names with 8-bit (or 4-bit) states → (package, class). Block-wise quantized
#: Adam states (Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization") take 2 bytes per
#: parameter instead of AdamW's 8; "paged" keeps them in CUDA unified memory (plain on the CPU).
LOW_BIT_ADAMW = {
    "adamw_bnb_8bit": ("bitsandbytes", "AdamW8bit"),
    "adamw_8bit": ("bitsandbytes", "AdamW8bit"),
    "paged_adamw_8bit": ("bitsandbytes", "PagedAdamW8bit"),
    "paged_adamw_32bit": ("bitsandbytes", "PagedAdamW32bit"),
    "adamw_torch_8bit": ("torchao", "AdamW8bit"),
    "adamw_torch_4bit": ("torchao", "AdamW4bit"),
}


def _low_bit_class(name: str):
    package, cls = LOW_BIT_ADAMW[name]
    try:
        if package == "bitsandbytes":
            import bitsandbytes.optim as module
        else:
            import torchao.optim as module
    except ImportError as err:
        raise StropError(f"optimizer: {name} needs {package}: pip install {package} "
                         f"(or use adamw_torch)") from err
    return getattr(module, cls)


def build_optimizer(params: list[torch.nn.Parameter], cfg, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; the fused CUDA kernel where the device has it (one launch for all parameters); 8-bit /
    4-bit states through bitsandbytes or torchao when the optimizer name asks for them."""
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    betas, eps = (cfg.adam_beta1, cfg.adam_beta2), cfg.adam_epsilon
    if cfg.optimizer in LOW_BIT_ADAMW:
        return _low_bit_class(cfg.optimizer)(groups, lr=cfg.learning_rate, betas=betas, eps=eps)
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=betas, eps=eps, fused=fused)


def warmup_steps(cfg, total_steps: int) -> int:
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


def build_scheduler(optimizer: torch.optim.Optimizer, cfg, total_steps: int) -> LambdaLR:
    warmup = warmup_steps(cfg, total_steps)
    options = getattr(cfg, "lr_scheduler_kwargs", None)
    return LambdaLR(optimizer, lambda step: lr_factor(step, warmup, total_steps, cfg.lr_scheduler, options))


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
