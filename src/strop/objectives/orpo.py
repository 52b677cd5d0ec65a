"""ORPO: Odds Ratio Preference Optimization (Hong et al. 2024, "ORPO: Monolithic Preference Optimization
without Reference Model", eqs. 6-7). No reference model: SFT on the chosen reply plus an odds-ratio term.

With P(y|x) = exp((1/|y|) Σ_t log π(y_t|x, y_<t)) the length-normalised likelihood and
odds(y|x) = P / (1 − P):

    L = −(1/|y_c|) log π(y_c|x)  +  λ · (−log σ( log odds(y_c|x) − log odds(y_r|x) ))

λ is `orpo_alpha` (Axolotl's name; 0.1 in the paper's main runs). Reported rewards are λ · mean log-prob,
as in TRL, so the numbers compare.

The NLL term is the paper's L_SFT: the causal-LM loss of the chosen reply y_w given x, a mean over the reply's
tokens, then a mean over pairs (the expectation of eq. 6). TRL's ORPOTrainer differs:
its NLL covers the prompt tokens too and averages over all chosen tokens of the batch, so it also trains the
model to write prompts and weighs long pairs more. The odds-ratio term is the same in both.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from strop.data.preference import PAIR_FORMATS
from strop.objectives.preference_common import PairObjective, halves, pair_metrics


class ORPOParams(BaseModel):
    orpo_alpha: float = Field(0.1, ge=0, description="λ: weight of the odds-ratio term added to the chosen NLL (ORPO).")


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − eˣ) for x < 0, accurate on both sides of −log 2 (Mächler 2012)."""
    x = x.clamp(max=-1e-7)
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo_loss(
    chosen_mean_logps: torch.Tensor, rejected_mean_logps: torch.Tensor, alpha: float = 0.1
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair ORPO losses from length-averaged log-probs, and per-pair metrics."""
    log_odds = (chosen_mean_logps - rejected_mean_logps) - (log1mexp(chosen_mean_logps) - log1mexp(rejected_mean_logps))
    ratio_loss = -F.logsigmoid(log_odds)
    nll = -chosen_mean_logps
    metrics = pair_metrics(
        alpha * chosen_mean_logps, alpha * rejected_mean_logps, chosen_mean_logps, rejected_mean_logps
    )
    metrics.update({"nll_loss": nll.detach(), "log_odds_ratio": log_odds.detach()})
    return nll + alpha * ratio_loss, metrics


class ORPOObjective(PairObjective):
    name = "orpo"
    dataset_types = tuple(PAIR_FORMATS)
    params = ORPOParams

    def pair_loss(self, logps, lengths, ref):
        chosen, rejected = halves(logps / lengths.clamp(min=1))
        return orpo_loss(chosen, rejected, self.cfg.orpo_alpha)
