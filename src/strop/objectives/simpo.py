"""SimPO: Simple Preference Optimization with a reference-free reward (Meng et al. 2024, "SimPO", eq. 6).

The implicit reward is the length-normalised log-likelihood, r(x, y) = (β/|y|) log π(y|x), and the
chosen reply must win by a target margin γ:

    L = −log σ( (β/|y_c|) log π(y_c|x) − (β/|y_r|) log π(y_r|x) − γ )

β is `rl_beta` (default 2.0, the paper's range is 2–2.5), γ is `simpo_gamma` (default 0.5). No reference
model is used.

`simpo_nll_alpha` = α > 0 adds CPO's behaviour-cloning term on the chosen reply (CPO-SimPO, what TRL's
CPOTrainer(loss_type="simpo") computes with its default cpo_alpha = 1):

    L + α · (−(1/|y_c|) log π(y_c|x))

The default 0 is the SimPO paper. As in strop's CPO the NLL is a per-reply token mean averaged over pairs
(TRL averages over all chosen tokens of the batch; equal when the chosen replies have equal lengths).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from strop.data.preference import PAIR_FORMATS
from strop.objectives.preference_common import BetaParams, PairObjective, beta, halves, pair_metrics


class SimPOParams(BetaParams):
    simpo_gamma: float = Field(0.5, ge=0, description="γ: target reward margin of SimPO.")
    simpo_nll_alpha: float = Field(
        0.0,
        ge=0,
        description="α: weight of a chosen-reply NLL added to SimPO (CPO-SimPO; "
        "TRL's CPOTrainer(loss_type='simpo') uses 1.0). 0: the SimPO paper.",
    )


def simpo_loss(
    chosen_mean_logps: torch.Tensor,
    rejected_mean_logps: torch.Tensor,
    beta: float = 2.0,
    gamma: float = 0.5,
    nll_alpha: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair SimPO (or, with nll_alpha > 0, CPO-SimPO) losses from length-averaged log-probs, and metrics."""
    chosen_rewards, rejected_rewards = beta * chosen_mean_logps, beta * rejected_mean_logps
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards - gamma)
    metrics = pair_metrics(chosen_rewards, rejected_rewards, chosen_mean_logps, rejected_mean_logps)
    if nll_alpha:
        losses = losses - nll_alpha * chosen_mean_logps
        metrics["nll_loss"] = -chosen_mean_logps.detach()
    return losses, metrics


class SimPOObjective(PairObjective):
    name = "simpo"
    dataset_types = tuple(PAIR_FORMATS)
    params = SimPOParams

    def pair_loss(self, logps, lengths, ref):
        chosen, rejected = halves(logps / lengths.clamp(min=1))
        return simpo_loss(chosen, rejected, beta(self.cfg, 2.0), self.cfg.simpo_gamma, self.cfg.simpo_nll_alpha)
