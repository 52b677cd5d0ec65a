"""Mixed precision: which autocast dtype a run computes in on a device, and the autocast context."""

from __future__ import annotations

import contextlib

import torch

from strop.errors import StropError
from strop.run_types import RunConfig


def cpu_computes_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX-512 or AMX). Elsewhere (AVX2) torch multiplies bf16
    with its reference gemm: a 512 × 576 × 1536 matmul took 859 ms against 22 ms in fp32 on a 2-core AMD
    EPYC, and an Axolotl GRPO config's one step went from seconds to over ten minutes."""
    return torch.backends.cpu.get_cpu_capability() in {"AVX512", "AMX"}


def bf16_fallback_note(cfg: RunConfig, device: torch.device) -> str | None:
    """The plan's note when `bf16: true` computes in fp32 because this CPU has no native bf16."""
    if cfg.bf16 is True and not cfg.fp16 and device.type == "cpu" and not cpu_computes_bf16():
        capability = torch.backends.cpu.get_cpu_capability()
        return (
            f"bf16: this CPU ({capability}) has no native bf16 matmul (about 40× slower than fp32): computing in fp32"
        )
    return None


def autocast_dtype(cfg: RunConfig, device: torch.device) -> torch.dtype | None:
    """bf16 where the device computes it natively (`bf16: true` on a CPU without it computes in fp32,
    with a note in the plan), fp16 only when asked (CUDA), else full precision."""
    if cfg.fp16:
        if device.type != "cuda":
            raise StropError("fp16: mixed precision with fp16 needs a CUDA device; use bf16 on the CPU")
        return torch.float16
    if cfg.bf16 is True:
        return None if bf16_fallback_note(cfg, device) else torch.bfloat16
    if cfg.bf16 == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if device.type == "cpu" and cpu_computes_bf16():
            return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
