"""RMSNorm, forward and backward in one pass each.

    y = w ⊙ bf16(x · rstd),   rstd = 1 / sqrt(mean(x²) + eps)
    dx = rstd · (dn − n · mean(dn ⊙ n)),   n = x · rstd,  dn = dy ⊙ w;     dw = Σ_rows dy ⊙ n

Why not the library path: transformers' LlamaRMSNorm runs about six elementwise kernels (upcast, square,
mean, rsqrt, multiply, downcast, scale), each reading and writing the whole activation, and autograd
keeps an fp32 copy of the input for the backward. Here the forward reads x once and writes y once and
keeps one fp32 number per row (rstd); the backward reads x, dy once and writes dx once, with the weight
gradient summed per program and reduced at the end. The rounding matches transformers' (the normalised
value is rounded to the input dtype before the weight multiplies it).
"""

from __future__ import annotations

import torch

from strop.kernels._triton import HAS_TRITON, tl, triton, use_triton


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' LlamaRMSNorm, written out: the fallback and the tests' reference."""
    dtype = x.dtype
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


if HAS_TRITON:  # pragma: no cover - needs a GPU

    @triton.jit
    def _rms_fwd(X, W, Y, RSTD, N, eps, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        mask = cols < N
        x = tl.load(X + row * N + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / N + eps)
        w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
        n = (x * rstd).to(Y.dtype.element_ty).to(tl.float32)
        tl.store(Y + row * N + cols, (n * w).to(Y.dtype.element_ty), mask=mask)
        tl.store(RSTD + row, rstd)

    @triton.jit
    def _rms_bwd(DY, X, W, RSTD, DX, DWP, M, N, rows_per_prog, BLOCK: tl.constexpr, HAS_DW: tl.constexpr):
        pid = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        mask = cols < N
        w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
        dw = tl.zeros([BLOCK], dtype=tl.float32)
        start = pid * rows_per_prog
        end = tl.minimum(start + rows_per_prog, M)
        for r in range(start, end):
            row = r.to(tl.int64)
            x = tl.load(X + row * N + cols, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(DY + row * N + cols, mask=mask, other=0.0).to(tl.float32)
            rstd = tl.load(RSTD + row)
            n = x * rstd
            dn = dy * w
            c = tl.sum(dn * n, axis=0) / N
            tl.store(DX + row * N + cols, ((dn - n * c) * rstd).to(DX.dtype.element_ty), mask=mask)
            if HAS_DW:
                dw += dy * n.to(DY.dtype.element_ty).to(tl.float32)
        if HAS_DW:
            tl.store(DWP + pid * N + cols, dw, mask=mask)


def _warps(block: int) -> int:
    return 4 if block <= 1024 else 8 if block <= 4096 else 16


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).contiguous()
        m, n = x2.shape
        y = torch.empty_like(x2)
        rstd = torch.empty(m, device=x.device, dtype=torch.float32)
        block = triton.next_power_of_2(n)
        _rms_fwd[(m,)](x2, weight, y, rstd, n, eps, BLOCK=block, num_warps=_warps(block))
        ctx.save_for_backward(x2, weight, rstd)
        return y.view(shape)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x2, weight, rstd = ctx.saved_tensors
        m, n = x2.shape
        dy2 = dy.reshape(m, n).contiguous()
        dx = torch.empty_like(x2)
        programs = min(m, torch.cuda.get_device_properties(x2.device).multi_processor_count * 4)
        rows = triton.cdiv(m, programs)
        programs = triton.cdiv(m, rows)
        has_dw = ctx.needs_input_grad[1]
        dwp = torch.empty((programs, n), device=x2.device, dtype=torch.float32) if has_dw else rstd
        block = triton.next_power_of_2(n)
        _rms_bwd[(programs,)](
            dy2, x2, weight, rstd, dx, dwp, m, n, rows, BLOCK=block, HAS_DW=has_dw, num_warps=_warps(block)
        )
        dw = dwp.sum(0).to(weight.dtype) if has_dw else None
        return dx.view(dy.shape), dw, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension; Triton on CUDA, transformers' formula elsewhere."""
    if use_triton(x) and x.dtype == weight.dtype:
        return _RMSNorm.apply(x, weight, eps)
    return rms_norm_reference(x, weight, eps)
