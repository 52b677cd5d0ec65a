"""The bf16 AdamW step (`master_weights: bf16`): the CUDA Triton kernel against the exact float32 step and the
foreach path (skipped without CUDA; the CPU path is tested in tests/strategies/test_bf16_masters.py)."""

import pytest
import torch

from strop.kernels import adamw_bf16


@pytest.mark.skipif(not (torch.cuda.is_available() and adamw_bf16.HAS_TRITON), reason="needs CUDA and Triton")
def test_triton_step_is_one_stochastic_rounding_of_the_float32_step():
    torch.manual_seed(0)
    n = (1 << 20) + 7  # a partial last block
    weight = torch.randn(n, device="cuda").bfloat16()
    grad = torch.randn(n, device="cuda").bfloat16()
    s = adamw_bf16.StepScalars.of(1e-3, 0.9, 0.999, 1e-8, 0.1, 1)
    m_ref = 0.1 * grad.float()
    v_ref = 0.001 * grad.float() ** 2
    p_ref = weight.float() * s.decay - s.step_size * m_ref / (v_ref.sqrt() / s.bias2_sqrt + 1e-8)
    results = {}
    for name, step in (("triton", adamw_bf16._triton_step), ("foreach", adamw_bf16._foreach_step)):
        p, m, v = weight.clone(), torch.zeros_like(weight), torch.zeros_like(weight)
        step([p], [grad], [m], [v], s, [123])
        results[name] = p
        for got, ref in ((p, p_ref), (m, m_ref), (v, v_ref)):
            assert got.dtype == torch.bfloat16
            assert (
                (got.float() - ref).abs() <= ref.abs() * 2**-7 * 1.001 + 1e-8
            ).all()  # one bf16 step (+ fp32 error where p ≈ 0)
            assert abs(float((got.float() - ref).mean() / ref.abs().mean())) < 1e-4  # unbiased
    again = weight.clone()
    adamw_bf16._triton_step([again], [grad], [torch.zeros_like(weight)], [torch.zeros_like(weight)], s, [123])
    assert torch.equal(again, results["triton"])  # the bits are a function of the seed
