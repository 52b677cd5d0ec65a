"""Direct Preference Optimization and its variants: one small loss function per variant.

All variants act on the same quantity, the difference of policy/reference log-ratios of a pair

    h = [log π(y_c|x) − log π_ref(y_c|x)] − [log π(y_r|x) − log π_ref(y_r|x)]

with implicit rewards r = β (log π(y|x) − log π_ref(y|x)).

- sigmoid (Rafailov et al. 2023, "Direct Preference Optimization", eq. 7), with conservative label
  smoothing ε (Mitchell 2023, "A note on DPO with noisy preferences"):
      L = −(1 − ε) log σ(β h) − ε log σ(−β h)
- ipo (Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
  Preferences", eq. 17), τ = β, on length-averaged log-probs (as TRL does, so β means the same):
      L = (h − 1/(2β))²
- hinge (Zhao et al. 2023, "SLiC-HF"):  L = max(0, 1 − β h)
- robust (Chowdhury et al. 2024, "Provably Robust DPO"), unbiased under label-flip rate ε < 1/2:
      L = [(1 − ε)(−log σ(β h)) − ε(−log σ(−β h))] / (1 − 2ε)

`rl: dpo` takes the variant from `dpo_loss_type`; `rl: ipo` is DPO with the ipo variant.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from strop.data.preference import PAIR_FORMATS
from strop.objectives.preference_common import PairObjective, ReferenceParams, beta, halves, pair_metrics


class DPOParams(ReferenceParams):
    dpo_loss_type: Literal["sigmoid", "ipo", "hinge", "robust"] = Field(
        "sigmoid", description="DPO variant (rl: ipo selects ipo)."
    )
    dpo_label_smoothing: float = Field(
        0.0,
        ge=0,
        lt=0.5,
        description="ε: assumed share of flipped preference "
        "labels (conservative DPO for sigmoid, robust DPO for robust).",
    )


def sigmoid_loss(h: torch.Tensor, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    return -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)


def ipo_loss(h: torch.Tensor, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    return (h - 1 / (2 * beta)) ** 2


def hinge_loss(h: torch.Tensor, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    return torch.relu(1 - beta * h)


def robust_loss(h: torch.Tensor, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    eps = label_smoothing
    return ((1 - eps) * -F.logsigmoid(beta * h) - eps * -F.logsigmoid(-beta * h)) / (1 - 2 * eps)


VARIANTS = {"sigmoid": sigmoid_loss, "ipo": ipo_loss, "hinge": hinge_loss, "robust": robust_loss}


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
    variant: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair DPO-family losses from (summed or averaged) log-probs, and per-pair metrics."""
    chosen_ratio, rejected_ratio = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    losses = VARIANTS[variant](chosen_ratio - rejected_ratio, beta, label_smoothing)
    return losses, pair_metrics(beta * chosen_ratio, beta * rejected_ratio, policy_chosen, policy_rejected)


class DPOObjective(PairObjective):
    name = "dpo"
    dataset_types = tuple(PAIR_FORMATS)
    params = DPOParams
    needs_reference = True

    def __init__(self, variant: str | None = None):
        self.variant = variant  # fixed variant (rl: ipo), else dpo_loss_type

    def pair_loss(self, logps, lengths, ref):
        variant = self.variant or self.cfg.dpo_loss_type
        if variant == "ipo":  # IPO compares per-token log-ratios
            logps, ref = logps / lengths.clamp(min=1), ref / lengths.clamp(min=1)
        (pc, pr), (rc, rr) = halves(logps), halves(ref)
        return dpo_loss(pc, pr, rc, rr, beta(self.cfg, 0.1), variant, self.cfg.dpo_label_smoothing)


class IPOObjective(DPOObjective):
    name = "ipo"

    def __init__(self):
        super().__init__("ipo")
