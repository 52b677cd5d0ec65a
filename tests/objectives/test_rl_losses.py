"""GRPO/DAPO/Dr. GRPO and PPO pieces against hand-worked numbers."""

from __future__ import annotations

import math

import pytest
import torch

from strop.objectives.grpo import aggregate, group_advantages, grpo_token_loss, overlong_penalty
from strop.objectives.ppo import gae, value_loss
from strop.objectives.rl_common import k3_kl, per_token


def test_group_advantages_by_hand():
    # group [1, 0, 0, 0]: mean 0.25, sample std sqrt((0.75² + 3·0.25²) / 3) = 0.5
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0])
    scaled = group_advantages(rewards, 4)
    assert scaled[:4].tolist() == pytest.approx([0.75 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001])
    assert scaled[4:].tolist() == [0.0] * 4  # a constant group has no signal
    assert group_advantages(rewards, 4, scale=False)[:4].tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])


@pytest.mark.parametrize(
    "ratio, advantage, loss, cut",
    [
        (1.5, 1.0, -1.2, True),  # above 1 + ε with a positive advantage: clipped, no gradient through ρ
        (1.5, -1.0, 1.5, False),  # a negative advantage keeps the larger penalty
        (0.5, 1.0, -0.5, False),
        (0.5, -1.0, 0.8, True),  # below 1 − ε with a negative advantage: clipped
        (1.25, 1.0, -1.25, False),  # inside a clip-higher bound of 0.28
    ],
)
def test_clipped_surrogate_by_hand(ratio, advantage, loss, cut):
    eps_high = 0.28 if ratio == 1.25 else 0.2
    logps = torch.tensor([[math.log(ratio)]])
    out, was_cut, kl = grpo_token_loss(logps, torch.zeros(1, 1), torch.tensor([advantage]), 0.2, eps_high)
    assert float(out) == pytest.approx(loss) and bool(was_cut) == cut and kl is None


def test_on_policy_gradient_is_minus_advantage_over_length():
    """With one update per rollout (ρ = 1, live gradient), GRPO's gradient on each token's log-prob is
    −Â_i / |o_i|; token-level (DAPO) gives −Â_i / Σ|o|."""
    logps = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, 0.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    advantages = torch.tensor([2.0, -1.0])
    token_loss, _, _ = grpo_token_loss(logps, logps.detach(), advantages, 0.2, 0.2)
    (aggregate(token_loss, mask, "grpo").sum() / 2).backward()
    torch.testing.assert_close(logps.grad, torch.tensor([[-2 / 3 / 2] * 3, [1 / 2 / 2, 1 / 2 / 2, 0.0]]))
    logps.grad = None
    token_loss, _, _ = grpo_token_loss(logps, logps.detach(), advantages, 0.2, 0.2)
    (aggregate(token_loss, mask, "dapo").sum() / 5).backward()
    torch.testing.assert_close(logps.grad, torch.tensor([[-2 / 5] * 3, [1 / 5, 1 / 5, 0.0]]))


def test_k3_kl_is_zero_at_the_reference_and_positive_elsewhere():
    logps = torch.tensor([-1.0, -2.0])
    assert k3_kl(logps, logps).tolist() == [0.0, 0.0]
    delta = 0.5  # ref − logp
    assert float(k3_kl(torch.tensor([-1.0]), torch.tensor([-0.5]))) == pytest.approx(math.exp(delta) - delta - 1)
    _, _, kl = grpo_token_loss(
        torch.tensor([[-1.0]]), torch.tensor([[-1.0]]), torch.tensor([0.0]), 0.2, 0.2, torch.tensor([[-0.5]]), beta=0.1
    )
    assert float(kl) == pytest.approx(math.exp(delta) - delta - 1)


def test_overlong_penalty_ramps_over_the_buffer():
    assert overlong_penalty(48, 64, 16, 1.0) == 0.0
    assert overlong_penalty(56, 64, 16, 1.0) == pytest.approx(-0.5)
    assert overlong_penalty(64, 64, 16, 2.0) == pytest.approx(-2.0)


def test_gae_by_hand():
    rewards, values = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.5, 0.5, 0.5])
    advantages, returns = gae(rewards, values, 1.0, 1.0)  # λ = 1: Monte-Carlo return minus value
    assert returns.tolist() == pytest.approx([1.0, 1.0, 1.0]) and advantages.tolist() == pytest.approx([0.5] * 3)
    advantages, _ = gae(rewards, values, 1.0, 0.5)  # δ = [0, 0, 0.5]
    assert advantages.tolist() == pytest.approx([0.125, 0.25, 0.5])


def test_value_loss_takes_the_worse_of_clipped_and_unclipped():
    # V moved from 0 to 1, R = 2: unclipped ½·1² = 0.5, clipped (0.2) ½·1.8² = 1.62
    assert float(value_loss(torch.tensor(1.0), torch.tensor(0.0), torch.tensor(2.0), 0.2)) == pytest.approx(1.62)


def test_per_token_values_sit_at_the_shifted_completion_positions():
    rows = [{"prompt_len": 3, "v": [1.0, 2.0]}, {"prompt_len": 1, "v": [5.0]}]
    assert per_token(rows, "v", 5).tolist() == [[0, 0, 1, 2, 0], [5, 0, 0, 0, 0]]


@pytest.mark.parametrize(("loss_type", "expected"), [("grpo", 3), ("dr_grpo", 3 * 4), ("dapo", 2 + 1)])
def test_masked_completions_stay_in_the_grpo_and_dr_grpo_normalisers(loss_type, expected):
    """Three completions, the first masked (truncated): GRPO's 1/G and Dr. GRPO's G·L_max still count it,
    DAPO's token count does not (module docstring of objectives/grpo.py). A fourth row is a torchrun
    filler (weight 0, not counted): no normaliser counts it."""
    from types import SimpleNamespace

    from strop.objectives.grpo import GRPOObjective

    objective = GRPOObjective()
    objective.cfg, objective.loss_type = SimpleNamespace(max_completion_length=4), loss_type
    labels = torch.tensor(
        [[-100, 5, 5, 5, 5], [-100, 5, 5, -100, -100], [-100, 5, -100, -100, -100], [-100, 5, 5, -100, -100]]
    )
    batch = {"labels": labels, "weights": torch.tensor([0.0, 1.0, 1.0, 0.0]), "counted": torch.tensor([1.0, 1, 1, 0])}
    assert objective.count(batch) == expected
