"""Supervised fine-tuning / instruction tuning / continued pretraining: next-token cross-entropy.

    L = -(1/N) Σ_t log p_θ(y_t | y_<t, x)

over the N response tokens of the whole optimizer step (all accumulated micro-batches), so that
micro_batch_size × gradient_accumulation_steps can be split any way without changing the update.

Where strop's kernels are on (CUDA, strategies/kernels.py) the same sum comes from the chunked linear +
cross-entropy, which never holds the tokens × vocabulary logits; elsewhere from the model's logits.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from strop.data import build_sft_data, collate
from strop.data.formats import FORMATS
from strop.data.mixture import DATASET_IDS
from strop.data.replay import source_paths
from strop.kernels import causal_lm_group_losses, causal_lm_loss, fused_loss_ready
from strop.objectives.base import Objective, model_inputs, shifted_token_logps
from strop.run_types import RunConfig


def sft_loss(token_logps: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-example summed negative log-likelihood over masked tokens, and the token count."""
    per_example = -(token_logps * mask).sum(dim=1)
    return per_example, {"tokens": float(mask.sum())}


class SFTObjective(Objective):
    name = "sft"
    dataset_types = tuple(FORMATS)

    def build_data(self, cfg: RunConfig, tokenizer, base_dir: Path | None):
        return build_sft_data(cfg, tokenizer, base_dir)

    def collate(self, rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
        return collate(rows, pad_id)

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"][:, 1:] != -100).sum())

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], denominator: float):
        if DATASET_IDS in batch:  # several datasets: the same sum, split by dataset for the metrics
            assert self.cfg is not None, "build_data sets the run's config"
            per_dataset = nll_by_dataset(model, batch, len(source_paths(self.cfg)))
            loss = per_dataset.sum() / denominator
            parts = {f"mixture.nll.{d}": value.detach() for d, value in enumerate(per_dataset)}
            return loss, {"loss": loss.detach(), **parts}
        loss = summed_nll(model, batch) / denominator
        return loss, {"loss": loss.detach()}  # a device tensor: the loop reads it only at logging steps


def nll_by_dataset(model: nn.Module, batch: dict[str, torch.Tensor], n: int) -> torch.Tensor:
    """Negative log-likelihood summed over each dataset's response tokens, shape (n,)."""
    if fused_loss_ready(model):
        return causal_lm_group_losses(
            model, labels=batch["labels"], groups=batch[DATASET_IDS], n_groups=n, **model_inputs(batch, model)
        )
    logits = model(**model_inputs(batch, model), use_cache=False).logits
    token_logps, mask = shifted_token_logps(logits, batch["labels"])
    owner = batch[DATASET_IDS][:, 1:]
    return torch.stack([-(token_logps * (mask & (owner == d))).sum() for d in range(n)])


def summed_nll(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Negative log-likelihood summed over the batch's response tokens."""
    if fused_loss_ready(model):
        return causal_lm_loss(model, labels=batch["labels"], reduction="sum", **model_inputs(batch, model))
    logits = model(**model_inputs(batch, model), use_cache=False).logits
    token_logps, mask = shifted_token_logps(logits, batch["labels"])
    return sft_loss(token_logps, mask)[0].sum()
