"""Chunked linear + cross-entropy against materialised logits and F.cross_entropy."""

import pytest
import torch
import torch.nn.functional as F

from strop.kernels.cross_entropy import IGNORE, linear_cross_entropy, shift_labels


def reference(h, w, t, b=None):
    logits = h @ w.t() + (b if b is not None else 0)
    logits = logits if logits.dtype == torch.float64 else logits.float()
    return F.cross_entropy(logits, t, ignore_index=IGNORE, reduction="sum")


@pytest.mark.parametrize("chunk", [1, 4, 7, 64])
@pytest.mark.parametrize("with_bias", [False, True])
def test_matches_reference_with_grads(chunk, with_bias):
    torch.manual_seed(0)
    h = torch.randn(23, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(51, 16, dtype=torch.float64, requires_grad=True)
    b = torch.randn(51, dtype=torch.float64, requires_grad=True) if with_bias else None
    t = torch.randint(0, 51, (23,))
    t[[0, 5, 22]] = IGNORE
    ours = linear_cross_entropy(h, w, t, b, chunk=chunk)
    ref = reference(h, w, t, b)
    assert torch.allclose(ours.double(), ref, rtol=1e-6)
    params = (h, w) + ((b,) if with_bias else ())
    g1 = torch.autograd.grad(ours * 0.37, params)
    g2 = torch.autograd.grad(ref * 0.37, params)
    for a, c in zip(g1, g2):
        assert torch.allclose(a, c, rtol=1e-6, atol=1e-9)


def test_bf16_rounds_like_transformers():
    torch.manual_seed(1)
    h = torch.randn(2, 9, 32, dtype=torch.bfloat16)
    w = torch.randn(100, 32, dtype=torch.bfloat16)
    labels = torch.randint(0, 100, (2, 9))
    t = shift_labels(labels)
    ours = linear_cross_entropy(h, w, t, chunk=5)
    ref = F.cross_entropy((h @ w.t()).float().reshape(-1, 100), t.reshape(-1), ignore_index=IGNORE, reduction="sum")
    assert torch.allclose(ours, ref, rtol=1e-5)


def test_hand_case_uniform_logits():
    h = torch.zeros(3, 4)
    w = torch.randn(10, 4)
    loss = linear_cross_entropy(h, w, torch.tensor([1, IGNORE, 9]))
    assert torch.allclose(loss, torch.tensor(2 * torch.log(torch.tensor(10.0)).item()))


def test_shift_labels():
    assert shift_labels(torch.tensor([[5, 6, 7]])).tolist() == [[6, 7, IGNORE]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("with_bias", [False, True])
def test_triton_path_matches_fallback(monkeypatch, dtype, with_bias):
    torch.manual_seed(2)
    h = torch.randn(301, 96, device="cuda", dtype=dtype, requires_grad=True)
    w = (0.3 * torch.randn(10007, 96, device="cuda", dtype=dtype)).requires_grad_()
    b = torch.randn(10007, device="cuda", dtype=dtype, requires_grad=True) if with_bias else None
    t = torch.randint(0, 10007, (301,), device="cuda")
    t[[0, 7, 300]] = IGNORE
    params = (h, w) + ((b,) if with_bias else ())

    def run():
        loss = linear_cross_entropy(h, w, t, b, chunk=64)
        return loss, torch.autograd.grad(loss * 0.37, params)

    fast, fast_grads = run()
    monkeypatch.setenv("STROP_NO_TRITON", "1")
    plain, plain_grads = run()
    assert torch.allclose(fast, plain, rtol=1e-5)
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    for a, c in zip(fast_grads, plain_grads):
        assert torch.allclose(a.float(), c.float(), rtol=tol, atol=tol * c.abs().max().item())


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_fp32_head_under_bf16_autocast(device):
    """Full fine-tuning keeps fp32 weights and runs under bf16 autocast: the logits come out bf16 while the
    hidden states' gradient stays fp32 (this crashed `strop train` of a full 1B model on an H200)."""
    torch.manual_seed(3)
    h = torch.randn(37, 48, device=device, requires_grad=True)
    w = (0.3 * torch.randn(501, 48, device=device)).requires_grad_()
    t = torch.randint(0, 501, (37,), device=device)
    with torch.autocast(device, dtype=torch.bfloat16):
        loss = linear_cross_entropy(h, w, t, chunk=16)
    grads = torch.autograd.grad(loss, (h, w))
    assert grads[0].dtype == torch.float32 and grads[1].dtype == torch.float32
    ref = torch.nn.functional.cross_entropy(h @ w.t(), t, reduction="sum")
    ref_grads = torch.autograd.grad(ref, (h, w))
    torch.testing.assert_close(loss.float(), ref, rtol=2e-2, atol=0.0)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=5e-2, atol=5e-2 * want.abs().max().item())
