"""SwiGLU gate, a = silu(g) ⊙ u, as one kernel each way.

    da/dg = u · σ(g) · (1 + g · (1 − σ(g))),   da/du = silu(g)

Why not the library path: `act_fn(gate) * up` is two kernels forward, and autograd saves silu's input
and output plus both product operands; its backward runs four more elementwise kernels over the
largest activation of the model (tokens × 14336 for Llama-3-8B). Here the forward is one read of g and
u and one write of a, only g and u are saved, and the backward recomputes σ(g) in registers and writes
both gradients over the saved g and u (they are dead afterwards), so it allocates nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from strop.kernels._triton import HAS_TRITON, tl, triton, use_triton


def swiglu_reference(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    return F.silu(g) * u


if HAS_TRITON:  # pragma: no cover - needs a GPU

    @triton.jit
    def _swiglu_fwd(G, U, A, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        g = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(U + offs, mask=mask, other=0.0)
        silu = (g * tl.sigmoid(g)).to(U.dtype.element_ty)  # rounded like transformers' act_fn output
        tl.store(A + offs, (silu.to(tl.float32) * u.to(tl.float32)).to(A.dtype.element_ty), mask=mask)

    @triton.jit
    def _swiglu_bwd(DA, G, U, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        da = tl.load(DA + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(U + offs, mask=mask, other=0.0).to(tl.float32)
        sig = tl.sigmoid(g)
        silu = g * sig
        dg = da * u * sig * (1.0 + g * (1.0 - sig))
        du = da * silu
        tl.store(G + offs, dg.to(G.dtype.element_ty), mask=mask)
        tl.store(U + offs, du.to(U.dtype.element_ty), mask=mask)

    @triton.jit
    def _swiglu_packed_fwd(GU, A, inter, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < inter
        g = tl.load(GU + row * 2 * inter + cols, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(GU + row * 2 * inter + inter + cols, mask=mask, other=0.0)
        silu = (g * tl.sigmoid(g)).to(A.dtype.element_ty)
        tl.store(A + row * inter + cols, (silu.to(tl.float32) * u.to(tl.float32)).to(A.dtype.element_ty), mask=mask)

    @triton.jit
    def _swiglu_packed_bwd(DA, GU, inter, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < inter
        da = tl.load(DA + row * inter + cols, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(GU + row * 2 * inter + cols, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(GU + row * 2 * inter + inter + cols, mask=mask, other=0.0).to(tl.float32)
        sig = tl.sigmoid(g)
        dg = da * u * sig * (1.0 + g * (1.0 - sig))
        du = da * g * sig
        tl.store(GU + row * 2 * inter + cols, dg.to(GU.dtype.element_ty), mask=mask)
        tl.store(GU + row * 2 * inter + inter + cols, du.to(GU.dtype.element_ty), mask=mask)


_BLOCK = 2048


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        g, u = g.contiguous(), u.contiguous()
        a = torch.empty_like(g)
        n = g.numel()
        _swiglu_fwd[(triton.cdiv(n, _BLOCK),)](g, u, a, n, BLOCK=_BLOCK, num_warps=8)
        ctx.save_for_backward(g, u)
        return a

    @staticmethod
    def backward(ctx, da: torch.Tensor):
        g, u = ctx.saved_tensors
        da = da.contiguous()
        n = g.numel()
        _swiglu_bwd[(triton.cdiv(n, _BLOCK),)](da, g, u, n, BLOCK=_BLOCK, num_warps=8)
        return g, u  # overwritten in place with dg, du


def swiglu(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """silu(g) * u; Triton on CUDA (same dtype, same shape), plain PyTorch elsewhere."""
    if use_triton(g, u) and g.dtype == u.dtype and g.shape == u.shape:
        return _SwiGLU.apply(g, u)
    return swiglu_reference(g, u)


class _SwiGLUPacked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gu: torch.Tensor) -> torch.Tensor:
        gu = gu.contiguous()
        inter = gu.shape[-1] // 2
        rows = gu.numel() // gu.shape[-1]
        a = torch.empty(*gu.shape[:-1], inter, device=gu.device, dtype=gu.dtype)
        block = 1024
        _swiglu_packed_fwd[(rows, triton.cdiv(inter, block))](gu, a, inter, BLOCK=block, num_warps=4)
        ctx.save_for_backward(gu)
        return a

    @staticmethod
    def backward(ctx, da: torch.Tensor):
        (gu,) = ctx.saved_tensors
        inter = gu.shape[-1] // 2
        rows = gu.numel() // gu.shape[-1]
        block = 1024
        _swiglu_packed_bwd[(rows, triton.cdiv(inter, block))](da.contiguous(), gu, inter, BLOCK=block, num_warps=4)
        return gu  # overwritten in place with [dg | du]


def swiglu_packed(gu: torch.Tensor) -> torch.Tensor:
    """silu(g) * u for gu = [g | u] along the last dimension (the grouped gate/up projection's output)."""
    if use_triton(gu):
        return _SwiGLUPacked.apply(gu)
    g, u = gu.chunk(2, dim=-1)
    return swiglu_reference(g, u)
