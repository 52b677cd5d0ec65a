"""Mixed precision: which autocast dtype a run computes in on a device, and the autocast context."""

from __future__ import annotations

import contextlib

import torch

from strop.errors import StropError
from strop.run_types import RunConfig


def autocast_dtype(cfg: RunConfig, device: torch.device) -> torch.dtype | None:
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


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
