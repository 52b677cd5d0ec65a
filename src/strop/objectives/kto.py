"""KTO: Kahneman-Tversky Optimization (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect
Theoretic Optimization", eq. 8). Learns from unpaired completions labelled desirable or undesirable.

With r(x, y) = log π(y|x) − log π_ref(y|x) and the reference point

    z₀ = max(0, mean over mismatched pairs (x, y') of [log π(y'|x) − log π_ref(y'|x)])   (no gradient)

an estimate of KL(π ‖ π_ref), the loss of an example is

    desirable:    λ_D · (1 − σ(β (r − z₀)))
    undesirable:  λ_U · (1 − σ(β (z₀ − r)))

β is `rl_beta` (default 0.1); λ_D, λ_U are `kto_desirable_weight`, `kto_undesirable_weight` (default 1;
the paper advises λ_D n_D / (λ_U n_U) in [1, 4/3] when the classes are unbalanced).

The mismatched pair of a row (its prompt with another row's completion) is fixed when the data is
built, not reshuffled per batch, so its reference log-prob is cached per row like everything else;
z₀ is the mean over the micro-batch's mismatched pairs, as in the paper; under torchrun the ranks pool
their slices of it (and of the metrics' class means), so N processes make the updates of one. Paired
datasets are accepted and split into one desirable and one undesirable example per pair.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from pydantic import Field
from torch import nn

from strop.data.preference import PAIR_FORMATS, UNPAIRED_FORMATS, build_unpaired_data, collate_unpaired
from strop.objectives.base import Objective, is_filler
from strop.objectives.preference_common import (
    REFERENCE_CACHE,
    ReferenceContext,
    ReferenceParams,
    beta,
    halves,
    pooled_means,
    prepare_reference,
    reference_logps,
    rows_of,
    sequence_logps,
    shares,
)
from strop.run_types import RunConfig, RunState
from strop.runtime import distributed


class KTOParams(ReferenceParams):
    kto_desirable_weight: float = Field(1.0, gt=0, description="λ_D: weight of desirable examples in KTO.")
    kto_undesirable_weight: float = Field(1.0, gt=0, description="λ_U: weight of undesirable examples in KTO.")


def kto_reference_point(policy_kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor) -> torch.Tensor:
    """z₀: the mismatched pairs' mean log-ratio, clamped at 0 and detached."""
    return (policy_kl_logps - ref_kl_logps).mean().clamp(min=0).detach()


def pooled_reference_point(policy_kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor, filler: bool) -> torch.Tensor:
    """z₀ under torchrun, where each rank holds a slice of the micro-batch: the mean over every rank's
    mismatched pairs (a filler batch adds none), as one process reading the whole micro-batch has it."""
    ratio = (policy_kl_logps - ref_kl_logps).detach()
    mean = pooled_means({"kl": ratio}, filler)["kl"]
    return torch.tensor(0.0 if math.isnan(mean) else max(mean, 0.0), device=ratio.device, dtype=ratio.dtype)


def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    kl: torch.Tensor,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-example KTO losses and metrics (NaN where a metric does not apply to the example)."""
    ratio = policy_logps - ref_logps
    losses = torch.where(
        desirable,
        desirable_weight * (1 - torch.sigmoid(beta * (ratio - kl))),
        undesirable_weight * (1 - torch.sigmoid(beta * (kl - ratio))),
    )
    nan = torch.full_like(ratio, float("nan"))
    rewards = (beta * ratio).detach()
    metrics = {
        "rewards/chosen": torch.where(desirable, rewards, nan),
        "rewards/rejected": torch.where(desirable, nan, rewards),
        "logps/chosen": torch.where(desirable, policy_logps.detach(), nan),
        "logps/rejected": torch.where(desirable, nan, policy_logps.detach()),
        "kl": kl.detach().expand_as(ratio),
    }
    return losses, metrics


class KTOObjective(Objective):
    name = "kto"
    dataset_types = (*UNPAIRED_FORMATS, *PAIR_FORMATS)
    params = KTOParams
    output_files = (REFERENCE_CACHE,)
    #: The strategy's `reference_context`, set by `prepare_training` (None: the reference is computed live).
    reference_context: ReferenceContext | None = None

    def build_data(self, cfg: RunConfig, tokenizer, base_dir: Path | None):
        self.cfg = cfg
        return build_unpaired_data(cfg, tokenizer, base_dir, self.name)

    def collate(self, rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
        return collate_unpaired(rows, pad_id)

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return batch["desirable"].shape[0]

    def prepare_training(self, run: RunState) -> None:
        self.cfg = run.cfg
        self.reference_context = run.strategy.reference_context
        if run.cfg.precompute_ref_log_probs:
            done = prepare_reference(run, self.collate, "unpaired")
            print(
                f"strop: reference log-probs: {done['cached']} rows from {REFERENCE_CACHE}, {done['computed']} computed"
            )

    def sequences(self, batch: dict[str, torch.Tensor], half: int) -> dict[str, torch.Tensor]:
        """The matched (half 0) or mismatched (half 1) sequences of a batch, as model inputs."""
        n = self.count(batch)
        return rows_of(batch, slice(half * n, (half + 1) * n))

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], denominator: float):
        cfg = self.cfg
        assert cfg is not None, "build_data or prepare_training sets the run's config"
        policy, _ = sequence_logps(model, self.sequences(batch, 0))
        with torch.no_grad():
            policy_kl, _ = sequence_logps(model, self.sequences(batch, 1))
        ref, ref_kl = halves(reference_logps(model, batch, cfg.precompute_ref_log_probs, self.reference_context))
        sharded = distributed.active()
        if sharded:
            kl = pooled_reference_point(policy_kl, ref_kl, is_filler(batch))
        else:
            kl = kto_reference_point(policy_kl, ref_kl)
        per_example, metrics = kto_loss(
            policy, ref, batch["desirable"], kl, beta(cfg, 0.1), cfg.kto_desirable_weight, cfg.kto_undesirable_weight
        )
        # the class means over the whole micro-batch: one rank's slice has its own mix of the classes
        means = pooled_means(metrics, is_filler(batch)) if sharded else None
        return shares(per_example, metrics, denominator, means)
