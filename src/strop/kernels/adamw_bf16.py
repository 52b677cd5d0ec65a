"""AdamW on bf16 weights and bf16 moments, each written back with stochastic rounding (`master_weights: bf16`).

Why: with fp32 master weights, fp32 gradients and fp32 moments a full fine-tune holds 16 bytes per
parameter; with all four in bf16 it holds 8. Plain round-to-nearest bf16 loses every update smaller
than half a unit in the last place (bf16 has 8 significant bits: an update below ~0.2 % of a weight
vanishes, and so does most of AdamW's second-moment update, (1 - beta2) = 0.1 % of it). Stochastic
rounding (Zamirai et al. 2020, "Revisiting BFloat16 Training") rounds up with a probability equal to the
fraction that truncation drops, so the rounded value equals the fp32 value in expectation and small
updates accumulate over steps: add 16 uniform random bits to the float32 bit pattern below bf16's
mantissa, then truncate those 16 bits.

The step computes in float32 (weight, gradient and both moments are read as bf16 and widened); only the
three stores round. On CUDA one Triton launch per parameter tensor reads 8 bytes and writes 6 per
parameter; elsewhere (the CPU, or `STROP_NO_TRITON=1`) the same math runs as torch._foreach ops over the
whole list. The random bits are a pure function of (seed, element): a resumed run draws the same ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from strop.kernels._triton import HAS_TRITON, tl, triton, use_triton

#: float32 bits that bf16 drops: the random addend is drawn below this and the sum truncated above it.
LOW_BITS = 0xFFFF


@dataclass(frozen=True)
class StepScalars:
    """One AdamW step's numbers for a group: the weight-decay factor 1 - lr·wd, the step size
    lr / (1 - beta1^t) and sqrt(1 - beta2^t)."""

    beta1: float
    beta2: float
    eps: float
    decay: float
    step_size: float
    bias2_sqrt: float

    @classmethod
    def of(cls, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float, step: int) -> StepScalars:
        return cls(beta1, beta2, eps, 1 - lr * weight_decay, lr / (1 - beta1**step), math.sqrt(1 - beta2**step))


def stochastic_round_bf16(values: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """float32 `values` rounded to bf16 stochastically, given int32 `noise` uniform in [0, 2^16).
    Adding the noise to the bit pattern carries into bf16's last bit with probability (dropped bits)/2^16;
    the sign bit is untouched, so magnitudes round and the rounding is unbiased for either sign."""
    bits = values.float().view(torch.int32) + noise
    return (bits & ~LOW_BITS).view(torch.float32).to(torch.bfloat16)


def random_bits(like: torch.Tensor, seed: int) -> torch.Tensor:
    """int32 uniform in [0, 2^16), shaped as `like`, from a generator seeded with `seed`."""
    generator = torch.Generator(like.device).manual_seed(seed)
    return torch.randint(0, LOW_BITS + 1, like.shape, dtype=torch.int32, device=like.device, generator=generator)


def _foreach_step(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    s: StepScalars,
    seeds: list[int],
) -> None:
    weights = [p.float() for p in params]
    g = [grad.float() for grad in grads]
    m = [t.float() for t in exp_avgs]
    v = [t.float() for t in exp_avg_sqs]
    if s.decay != 1:
        torch._foreach_mul_(weights, s.decay)
    torch._foreach_lerp_(m, g, 1 - s.beta1)
    torch._foreach_mul_(v, s.beta2)
    torch._foreach_addcmul_(v, g, g, 1 - s.beta2)
    denom = torch._foreach_sqrt(v)
    torch._foreach_div_(denom, s.bias2_sqrt)
    torch._foreach_add_(denom, s.eps)
    torch._foreach_addcdiv_(weights, m, denom, -s.step_size)
    for index, seed in enumerate(seeds):
        for stream, (target, value) in enumerate(((params, weights), (exp_avgs, m), (exp_avg_sqs, v))):
            noise = random_bits(value[index], seed * 3 + stream)
            target[index].copy_(stochastic_round_bf16(value[index], noise))


if HAS_TRITON:

    @triton.jit
    def _sr_bits(x, r):
        bits = x.to(tl.int32, bitcast=True) + (r & 0xFFFF).to(tl.int32)
        return (bits & -65536).to(tl.float32, bitcast=True).to(tl.bfloat16)

    @triton.jit
    def _adamw_kernel(
        p_ptr,
        g_ptr,
        m_ptr,
        v_ptr,
        n,
        beta1,
        beta2,
        eps,
        decay,
        step_size,
        bias2_sqrt,
        seed,
        BLOCK: tl.constexpr,
    ):
        offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < n
        p = tl.load(p_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        m = tl.load(m_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p = p * decay - step_size * m / (tl.sqrt(v) / bias2_sqrt + eps)
        r0, r1, r2, _ = tl.randint4x(seed, offsets.to(tl.int32))
        tl.store(p_ptr + offsets, _sr_bits(p, r0), mask=mask)
        tl.store(m_ptr + offsets, _sr_bits(m, r1), mask=mask)
        tl.store(v_ptr + offsets, _sr_bits(v, r2), mask=mask)


def _triton_step(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    s: StepScalars,
    seeds: list[int],
) -> None:
    block = 2048
    for p, g, m, v, seed in zip(params, grads, exp_avgs, exp_avg_sqs, seeds, strict=True):
        n = p.numel()
        _adamw_kernel[(triton.cdiv(n, block),)](
            p, g, m, v, n, s.beta1, s.beta2, s.eps, s.decay, s.step_size, s.bias2_sqrt, seed, BLOCK=block, num_warps=8
        )


def adamw_bf16_step(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    scalars: StepScalars,
    seeds: list[int],
) -> None:
    """One AdamW step in place on contiguous bf16 tensors, every store stochastically rounded; `seeds`
    (one per tensor, below 2^31) choose the random bits."""
    if not params:
        return
    step = _triton_step if use_triton(*params) else _foreach_step
    step(params, grads, exp_avgs, exp_avg_sqs, scalars, seeds)
