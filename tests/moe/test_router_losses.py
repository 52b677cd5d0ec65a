"""Router losses and health: hand-worked cases, transformers' loss as an oracle, padding invariance."""

from __future__ import annotations

import math

import pytest
import torch

from strop.moe import losses

# 4 real tokens over 2 experts, top-1: three pick expert 0, one picks expert 1; a 5th token is padding.
LOGITS = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [10.0, -10.0]])
MASK = torch.tensor([True, True, True, True, False])


def test_load_balancing_loss_by_hand():
    s = 1 / (1 + math.exp(-2))  # softmax([2, 0])[0]
    f = [0.75, 0.25]
    p = [(3 * s + (1 - s)) / 4, (3 * (1 - s) + s) / 4]
    expected = 2 * (f[0] * p[0] + f[1] * p[1])
    assert float(losses.load_balancing_loss(LOGITS, MASK, top_k=1)) == pytest.approx(expected, rel=1e-6)


def test_z_loss_by_hand():
    lse = 2 + math.log(1 + math.exp(-2))
    assert float(losses.z_loss(LOGITS, MASK)) == pytest.approx(lse**2, rel=1e-6)


def test_balanced_routing_scores_one_and_collapse_scores_e():
    uniform = torch.zeros(6, 3)
    uniform[torch.arange(6), torch.arange(6) % 3] = 1e-3  # ties broken evenly, probabilities ~ 1/3
    assert float(losses.load_balancing_loss(uniform, None, 1)) == pytest.approx(1.0, abs=1e-3)
    collapsed = torch.tensor([[50.0, 0.0, 0.0]] * 6)
    assert float(losses.load_balancing_loss(collapsed, None, 1)) == pytest.approx(3.0, abs=1e-3)


def test_padding_changes_nothing():
    """The same real tokens with or without extra padding rows give the same losses and health."""
    torch.manual_seed(0)
    real = torch.randn(7, 4)
    padded = torch.cat([real, torch.randn(5, 4) * 10])
    mask = torch.tensor([True] * 7 + [False] * 5)
    for fn in (lambda x, m: losses.load_balancing_loss(x, m, 2), losses.z_loss):
        assert float(fn(padded, mask)) == pytest.approx(float(fn(real, None)), rel=1e-6)
    assert losses.health(*losses.health_sums(padded, mask, 2)) == losses.health(*losses.health_sums(real, None, 2))


def test_matches_transformers_times_k():
    """transformers counts f_e per top-k slot, so its one-layer value is k times E·Σ f_e p_e."""
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    torch.manual_seed(1)
    logits = torch.randn(2 * 6, 5)
    attention = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    theirs = load_balancing_loss_func((logits,), num_experts=5, top_k=2, attention_mask=attention)
    ours = losses.load_balancing_loss(logits, attention.reshape(-1).bool(), top_k=2)
    assert float(ours) * 2 == pytest.approx(float(theirs), rel=1e-5)


def test_gradient_flows_through_probabilities_only():
    logits = LOGITS.clone().requires_grad_(True)
    losses.load_balancing_loss(logits, MASK, 1).backward()
    assert logits.grad[:4].abs().sum() > 0 and logits.grad[4].abs().sum() == 0  # padding gets none


def test_health_by_hand():
    counts, entropy, tokens = losses.health_sums(LOGITS, MASK, 1)
    h = losses.health(counts, float(entropy), tokens)
    assert h["load"] == [0.75, 0.25]
    assert h["load_entropy"] == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2))
    s = 1 / (1 + math.exp(-2))
    assert h["router_entropy"] == pytest.approx(-(s * math.log(s) + (1 - s) * math.log(1 - s)) / math.log(2))
    starved = losses.health(torch.tensor([10.0, 0.0, 10.0, 0.2]), 0.0, 10)
    assert starved["starved"] == 2  # 0 and 0.2/20.2 < 0.1 · 1/4
