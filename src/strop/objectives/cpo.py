"""CPO: Contrastive Preference Optimization (Xu et al. 2024, "Contrastive Preference Optimization:
Pushing the Boundaries of LLM Performance in Machine Translation", eqs. 3-5).

DPO with the reference replaced by a uniform prior (it cancels), plus a behaviour-cloning NLL on the
chosen reply that keeps the policy close to the preferred data:

    L = −log σ( β log π(y_c|x) − β log π(y_r|x) )  +  α · (−(1/|y_c|) log π(y_c|x))

β is `rl_beta` (default 0.1), α is `cpo_alpha` (default 1.0). The NLL is averaged over each chosen reply's
tokens and then over pairs (TRL averages over all chosen tokens of the batch; equal for equal lengths).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from strop.data.preference import PAIR_FORMATS
from strop.objectives.preference_common import BetaParams, PairObjective, beta, halves, pair_metrics


class CPOParams(BetaParams):
    cpo_alpha: float = Field(1.0, ge=0, description="α: weight of the chosen-reply NLL in CPO.")


def cpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    beta: float = 0.1,
    alpha: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair CPO losses from summed log-probs (and the chosen replies' token counts), and metrics."""
    chosen_rewards, rejected_rewards = beta * chosen_logps, beta * rejected_logps
    nll = -chosen_logps / chosen_lengths
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards) + alpha * nll
    metrics = pair_metrics(chosen_rewards, rejected_rewards, chosen_logps, rejected_logps)
    metrics["nll_loss"] = nll.detach()
    return losses, metrics


class CPOObjective(PairObjective):
    name = "cpo"
    dataset_types = tuple(PAIR_FORMATS)
    params = CPOParams

    def pair_loss(self, logps, lengths, ref):
        (chosen, rejected), (chosen_len, _) = halves(logps), halves(lengths)
        return cpo_loss(chosen, rejected, chosen_len.clamp(min=1), beta(self.cfg, 0.1), self.cfg.cpo_alpha)
