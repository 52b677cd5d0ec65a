"""Whether the Triton kernels may run: Triton importable and the tensor on a CUDA device.

Every kernel module has a plain-PyTorch fallback with the same math, used on the CPU, without Triton,
or when `STROP_NO_TRITON=1` (handy for isolating a kernel bug on the GPU).
"""

from __future__ import annotations

import os

import torch

try:  # pragma: no cover - depends on the machine
    import triton  # noqa: F401
    import triton.language as tl  # noqa: F401

    HAS_TRITON = True
except Exception:  # ImportError, or a broken install
    triton = None
    tl = None
    HAS_TRITON = False


def use_triton(*tensors: torch.Tensor) -> bool:
    if not HAS_TRITON or os.environ.get("STROP_NO_TRITON") == "1":
        return False
    return all(t.is_cuda for t in tensors)
