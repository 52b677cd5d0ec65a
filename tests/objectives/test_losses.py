"""Each preference loss three ways: a simple reference written here, a hand-worked case, and gradients."""

import math

import pytest
import torch

from strop.objectives import OBJECTIVES
from strop.objectives.cpo import cpo_loss
from strop.objectives.dpo import dpo_loss
from strop.objectives.kto import kto_loss, kto_reference_point
from strop.objectives.orpo import log1mexp, orpo_loss
from strop.objectives.reward import bradley_terry_loss
from strop.objectives.simpo import simpo_loss

TOL = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-6)}
B = 5  # odd on purpose


def logps(seed: int, n: int = B, dtype=torch.float64) -> torch.Tensor:
    return -torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 20 - 0.01


def mean_logps(seed: int, n: int = B, dtype=torch.float64) -> torch.Tensor:
    return -torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 3 - 1e-3


def sig(x):
    return 1 / (1 + torch.exp(-x))


def test_registry_holds_every_objective():
    assert {"sft", "dpo", "ipo", "orpo", "simpo", "cpo", "kto", "reward"} <= set(OBJECTIVES)
    for name in ("dpo", "ipo", "orpo", "simpo", "cpo", "kto", "reward"):
        assert OBJECTIVES[name].name == name and OBJECTIVES[name].dataset_types and OBJECTIVES[name].params


# ------------------------------------------------------------------ DPO family ------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("variant", ["sigmoid", "ipo", "hinge", "robust"])
def test_dpo_variants_match_reference(variant, dtype):
    pc, pr, rc, rr = (logps(s, dtype=dtype) for s in range(4))
    beta, eps = 0.3, 0.2
    h = (pc - rc) - (pr - rr)
    expected = {
        "sigmoid": -(1 - eps) * torch.log(sig(beta * h)) - eps * torch.log(sig(-beta * h)),
        "ipo": (h - 1 / (2 * beta)) ** 2,
        "hinge": torch.clamp(1 - beta * h, min=0),
        "robust": ((1 - eps) * -torch.log(sig(beta * h)) + eps * torch.log(sig(-beta * h))) / (1 - 2 * eps),
    }[variant]
    losses, metrics = dpo_loss(pc, pr, rc, rr, beta, variant, eps)
    torch.testing.assert_close(losses, expected, **TOL[dtype])
    torch.testing.assert_close(metrics["rewards/chosen"], beta * (pc - rc), **TOL[dtype])
    torch.testing.assert_close(metrics["rewards/margins"], beta * h, **TOL[dtype])
    assert metrics["rewards/accuracies"].tolist() == (h > 0).float().tolist()


def test_dpo_hand_worked():
    one = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    # h = (-1 - -1.5) - (-2 - -1.5) = 1; β = 0.5 → βh = 0.5
    args = one(-1.0), one(-2.0), one(-1.5), one(-1.5)
    case = lambda variant, beta=0.5, eps=0.0: float(dpo_loss(*args, beta, variant, eps)[0])  # noqa: E731
    assert case("sigmoid") == pytest.approx(0.47407698418010663, abs=1e-12)  # log(1 + e^-0.5)
    assert case("sigmoid", eps=0.1) == pytest.approx(0.9 * 0.47407698418010663 + 0.1 * 0.9740769841801067, abs=1e-12)
    assert case("ipo", beta=0.25) == pytest.approx(1.0, abs=1e-12)  # (1 - 1/(2·0.25))²
    assert case("hinge") == pytest.approx(0.5, abs=1e-12)  # max(0, 1 - 0.5)
    assert case("robust", eps=0.1) == pytest.approx(
        (0.9 * 0.47407698418010663 - 0.1 * 0.9740769841801067) / 0.8, abs=1e-12
    )


@pytest.mark.parametrize("variant", ["sigmoid", "ipo", "hinge", "robust"])
def test_dpo_gradcheck(variant):
    inputs = [logps(s).requires_grad_() for s in range(4)]
    assert torch.autograd.gradcheck(lambda *x: dpo_loss(*x, 0.7, variant, 0.1)[0], inputs)


# ------------------------------------------------------------------ ORPO ------------------------------


def test_log1mexp_is_accurate_on_both_sides():
    x = torch.tensor([-1e-6, -0.1, -0.69, -0.7, -5.0, -40.0], dtype=torch.float64)
    torch.testing.assert_close(
        log1mexp(x), torch.tensor([math.log(-math.expm1(v)) for v in x.tolist()], dtype=torch.float64)
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_orpo_matches_reference(dtype):
    c, r = mean_logps(0, dtype=dtype), mean_logps(1, dtype=dtype)
    pc, pr = torch.exp(c), torch.exp(r)
    log_odds = torch.log(pc / (1 - pc)) - torch.log(pr / (1 - pr))
    expected = -c + 0.25 * -torch.log(sig(log_odds))
    losses, metrics = orpo_loss(c, r, 0.25)
    torch.testing.assert_close(losses, expected, **TOL[dtype])
    torch.testing.assert_close(metrics["log_odds_ratio"], log_odds, **TOL[dtype])


def test_orpo_hand_worked():
    # P_c = 1/2 (odds 1), P_r = 1/4 (odds 1/3): log odds ratio = log 3; −log σ(log 3) = log(4/3)
    loss, metrics = orpo_loss(
        torch.tensor([math.log(0.5)], dtype=torch.float64), torch.tensor([math.log(0.25)], dtype=torch.float64), 0.1
    )
    assert float(metrics["log_odds_ratio"]) == pytest.approx(math.log(3), abs=1e-12)
    assert float(loss) == pytest.approx(math.log(2) + 0.1 * math.log(4 / 3), abs=1e-12)


def test_orpo_gradcheck():
    inputs = [mean_logps(s).requires_grad_() for s in range(2)]
    assert torch.autograd.gradcheck(lambda c, r: orpo_loss(c, r, 0.3)[0], inputs)


# ------------------------------------------------------------------ SimPO / CPO -----------------------


def test_simpo_reference_hand_worked_and_gradcheck():
    c, r = mean_logps(0), mean_logps(1)
    expected = -torch.log(sig(2.5 * c - 2.5 * r - 0.7))
    torch.testing.assert_close(simpo_loss(c, r, 2.5, 0.7)[0], expected, **TOL[torch.float64])
    # β=2, γ=0.5: 2·(−1) − 2·(−2) − 0.5 = 1.5 → log(1 + e^−1.5)
    one = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    assert float(simpo_loss(one(-1.0), one(-2.0), 2.0, 0.5)[0]) == pytest.approx(0.20141327798275246, abs=1e-12)
    inputs = [mean_logps(s).requires_grad_() for s in range(2)]
    assert torch.autograd.gradcheck(lambda a, b: simpo_loss(a, b, 2.0, 0.5)[0], inputs)


def test_cpo_simpo_adds_the_chosen_nll():
    # simpo_nll_alpha = α: SimPO + α · (−mean log-prob of the chosen reply); 0 is plain SimPO, no nll metric.
    c, r = mean_logps(0), mean_logps(1)
    losses, metrics = simpo_loss(c, r, 2.5, 0.7, nll_alpha=0.4)
    torch.testing.assert_close(losses, simpo_loss(c, r, 2.5, 0.7)[0] - 0.4 * c, **TOL[torch.float64])
    torch.testing.assert_close(metrics["nll_loss"], -c, **TOL[torch.float64])
    assert "nll_loss" not in simpo_loss(c, r, 2.5, 0.7)[1]
    one = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    assert float(simpo_loss(one(-1.0), one(-2.0), 2.0, 0.5, 1.0)[0]) == pytest.approx(1.20141327798275246, abs=1e-12)


def test_cpo_reference_hand_worked_and_gradcheck():
    c, r = logps(0), logps(1)
    lengths = torch.tensor([3.0, 1.0, 7.0, 2.0, 5.0], dtype=torch.float64)
    expected = -torch.log(sig(0.2 * (c - r))) + 0.5 * (-c / lengths)
    torch.testing.assert_close(cpo_loss(c, r, lengths, 0.2, 0.5)[0], expected, **TOL[torch.float64])
    # β=0.1, α=1: −log σ(0.1·(−4 − −6)) + 4/2 = log(1 + e^−0.2) + 2
    one = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    assert float(cpo_loss(one(-4.0), one(-6.0), one(2.0), 0.1, 1.0)[0]) == pytest.approx(
        0.598138869381592 + 2, abs=1e-12
    )
    inputs = [logps(s).requires_grad_() for s in range(2)]
    assert torch.autograd.gradcheck(lambda a, b: cpo_loss(a, b, lengths, 0.1, 1.0)[0], inputs)


# ------------------------------------------------------------------ KTO -------------------------------


def test_kto_reference_hand_worked_and_gradcheck():
    policy, ref = logps(0), logps(1)
    desirable = torch.tensor([True, False, True, True, False])
    kl = torch.tensor(0.3, dtype=torch.float64)
    ratio = policy - ref
    expected = torch.where(desirable, 1.5 * (1 - sig(0.4 * (ratio - kl))), 0.5 * (1 - sig(0.4 * (kl - ratio))))
    losses, metrics = kto_loss(policy, ref, desirable, kl, 0.4, 1.5, 0.5)
    torch.testing.assert_close(losses, expected, **TOL[torch.float64])
    assert torch.isnan(metrics["rewards/chosen"][1]) and not torch.isnan(metrics["rewards/chosen"][0])
    # r = [0.5, −0.5], z₀ = 0.2, β = 1: 1 − σ(0.3) and 1 − σ(0.7)
    hand, _ = kto_loss(
        torch.tensor([-1.0, -2.0], dtype=torch.float64),
        torch.tensor([-1.5, -1.5], dtype=torch.float64),
        torch.tensor([True, False]),
        torch.tensor(0.2, dtype=torch.float64),
        1.0,
    )
    torch.testing.assert_close(hand, torch.tensor([1 - 0.574442516811659, 1 - 0.6681877721681662], dtype=torch.float64))
    inputs = [logps(s).requires_grad_() for s in range(2)]
    assert torch.autograd.gradcheck(lambda p, q: kto_loss(p, q, desirable, kl, 0.4, 1.5, 0.5)[0], inputs)


def test_kto_reference_point_is_clamped_and_detached():
    policy = torch.tensor([0.1, -0.3], dtype=torch.float64, requires_grad=True)
    assert float(kto_reference_point(policy, torch.zeros(2, dtype=torch.float64))) == 0.0
    z = kto_reference_point(
        torch.tensor([0.5, 0.1], dtype=torch.float64, requires_grad=True), torch.zeros(2, dtype=torch.float64)
    )
    assert float(z) == pytest.approx(0.3) and not z.requires_grad


# ------------------------------------------------------------------ reward model ----------------------


def test_bradley_terry_reference_hand_worked_and_gradcheck():
    c, r = logps(0), logps(1)
    torch.testing.assert_close(bradley_terry_loss(c, r)[0], -torch.log(sig(c - r)), **TOL[torch.float64])
    assert float(
        bradley_terry_loss(torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64))[0]
    ) == pytest.approx(0.31326168751822286, abs=1e-12)  # log(1 + e^−1)
    inputs = [logps(s).requires_grad_() for s in range(2)]
    assert torch.autograd.gradcheck(lambda a, b: bradley_terry_loss(a, b)[0], inputs)
