"""RMSNorm and SwiGLU: strop's kernels against transformers' modules and plain PyTorch."""

import pytest
import torch

from strop.kernels.rmsnorm import rms_norm, rms_norm_reference
from strop.kernels.swiglu import swiglu, swiglu_packed, swiglu_reference

TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-12))


def test_rmsnorm_fallback_matches_transformers():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    norm = LlamaRMSNorm(37, eps=1e-5)
    norm.weight.data.normal_()
    x = torch.randn(3, 5, 37)
    assert torch.equal(rms_norm(x, norm.weight, 1e-5), norm(x))


def test_rmsnorm_hand_case():
    x = torch.tensor([[3.0, 4.0]])  # mean square 12.5
    y = rms_norm_reference(x, torch.ones(2), 0.0)
    assert torch.allclose(y, x / 12.5**0.5)


def test_swiglu_fallback():
    g, u = torch.randn(4, 9), torch.randn(4, 9)
    assert torch.allclose(swiglu(g, u), g * torch.sigmoid(g) * u)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 7, 4096), (5, 1000)])
def test_rmsnorm_triton(dtype, shape):
    pytest.importorskip("triton")
    x = torch.randn(*shape, device="cuda", dtype=dtype, requires_grad=True)
    w = (1 + 0.1 * torch.randn(shape[-1], device="cuda", dtype=dtype)).requires_grad_()
    dy = torch.randn(*shape, device="cuda", dtype=dtype)
    y = rms_norm(x, w, 1e-6)
    dx, dw = torch.autograd.grad(y, (x, w), dy)
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    y64 = rms_norm_reference(x64, w64, 1e-6)
    dx64, dw64 = torch.autograd.grad(y64, (x64, w64), dy.double())
    assert rel(y, y64) < TOL[dtype] and rel(dx, dx64) < TOL[dtype] and rel(dw, dw64) < TOL[dtype]


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_swiglu_triton(dtype):
    pytest.importorskip("triton")
    g = torch.randn(3, 333, 1001, device="cuda", dtype=dtype, requires_grad=True)
    u = torch.randn(3, 333, 1001, device="cuda", dtype=dtype, requires_grad=True)
    da = torch.randn_like(g)
    a = swiglu(g * 1, u * 1)  # non-leaf inputs: the backward overwrites its saved copies
    dg, du = torch.autograd.grad(a, (g, u), da)
    g64, u64 = g.detach().double().requires_grad_(), u.detach().double().requires_grad_()
    a64 = swiglu_reference(g64, u64)
    dg64, du64 = torch.autograd.grad(a64, (g64, u64), da.double())
    assert rel(a, a64) < TOL[dtype] and rel(dg, dg64) < TOL[dtype] and rel(du, du64) < TOL[dtype]


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_swiglu_packed(device):
    if device == "cuda":
        pytest.importorskip("triton")
    dtype = torch.bfloat16 if device == "cuda" else torch.float64
    gu = torch.randn(2, 7, 2 * 1500, device=device, dtype=dtype, requires_grad=True)
    da = torch.randn(2, 7, 1500, device=device, dtype=dtype)
    a = swiglu_packed(gu * 1)
    (dgu,) = torch.autograd.grad(a, (gu,), da)
    ref_in = gu.detach().double().requires_grad_()
    g, u = ref_in.chunk(2, dim=-1)
    ref = swiglu_reference(g, u)
    (dref,) = torch.autograd.grad(ref, (ref_in,), da.double())
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-10
    assert rel(a, ref) < tol and rel(dgu, dref) < tol
