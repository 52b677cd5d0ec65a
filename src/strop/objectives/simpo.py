"""SimPO: Simple Preference Optimization with a reference-free reward (Meng et al. 2024, "SimPO", eq. 6).

The implicit reward is the length-normalised log-likelihood, r(x, y) = (β/|y|) log π(y|x), and the
chosen reply must win by a target margin γ:

    L = −log σ( (β/|y_c|) log π(y_c|x) − (β/|y_r|) log π(y_r|x) − γ )

β is `rl_beta` (default 2.0, the paper's range is 2–2.5), γ is `simpo_gamma` (default 0.5). No reference
model is used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from strop.data.preference import PAIR_FORMATS
from strop.objectives.preference_common import BetaParams, PairObjective, beta, halves, pair_metrics


class SimPOParams(BetaParams):
    simpo_gamma: float = Field(0.5, ge=0, description="γ: target reward margin of SimPO.")


def simpo_loss(chosen_mean_logps: torch.Tensor, rejected_mean_logps: torch.Tensor, beta: float = 2.0,
               gamma: float = 0.5) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair SimPO losses from length-averaged log-probs, and per-pair metrics."""
    chosen_rewards, rejected_rewards = beta * chosen_mean_logps, beta * rejected_mean_logps
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards - gamma)
    return losses, pair_metrics(chosen_rewards, rejected_rewards, chosen_mean_logps, rejected_mean_logps)


class SimPOObjective(PairObjective):
    name = "simpo"
    dataset_types = tuple(PAIR_FORMATS)
    params = SimPOParams

    def pair_loss(self, logps, lengths, ref):
        chosen, rejected = halves(logps / lengths.clamp(min=1))
        return simpo_loss(chosen, rejected, beta(self.cfg, 2.0), self.cfg.simpo_gamma)
