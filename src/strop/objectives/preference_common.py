"""What the preference objectives share: config keys, sequence log-probs, the reference model, metrics.

The reference policy π_ref is the model as it is before the first step. strop never holds a second copy
of it: `prepare_training` runs every train and validation row through the model once (no grad, dropout
off, the training autocast) and caches log π_ref per row in `<output_dir>/reference_logps.safetensors`,
keyed by a hash of the row's tokens. The cache is reused on resume. That costs one forward pass over the
data and no memory during training, for any update strategy. With an adapter (LoRA) the reference can
instead be computed live, the adapter switched off (`precompute_ref_log_probs: false`): one extra
no-grad forward per step and nothing on disk.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import torch
from pydantic import BaseModel, Field
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from strop.data.preference import build_pair_data, collate_pairs
from strop.errors import StropError
from strop.models.loading import eval_mode
from strop.objectives.base import Objective, shifted_token_logps, vision_inputs
from strop.run_types import RunConfig, RunState
from strop.runtime import distributed
from strop.safe_io import disk_errors, staged_file

REFERENCE_CACHE = "reference_logps.safetensors"
#: A strategy's answer to "in which context does this model compute as the reference policy?"
ReferenceContext = Callable[[nn.Module], AbstractContextManager | None]


class BetaParams(BaseModel):
    rl_beta: float | None = Field(
        None, gt=0, description="β of the preference objective (default per objective: DPO/IPO/CPO/KTO 0.1, SimPO 2.0)."
    )
    dpo_beta: float | None = Field(None, gt=0, description="Alias of rl_beta.")


class ReferenceParams(BetaParams):
    precompute_ref_log_probs: bool = Field(
        True,
        description="Cache reference log-probs before step 0 (any strategy); "
        "false: compute them live with the adapter switched off (LoRA only).",
    )


def beta(cfg: RunConfig, default: float) -> float:
    return cfg.rl_beta or cfg.dpo_beta or default


# ---------------------------------------------------------------- log-probs ---------------------------


def sequence_logps(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-prob of each sequence's reply tokens, and how many reply tokens it has."""
    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **vision_inputs(batch), use_cache=False
    ).logits
    token_logps, mask = shifted_token_logps(logits, batch["labels"])
    return token_logps.sum(dim=1), mask.sum(dim=1)


def rows_of(batch: dict[str, torch.Tensor], part: slice) -> dict[str, torch.Tensor]:
    """The sequences `part` of a batch (e.g. the first half: chosen, or matched completions)."""
    return {k: batch[k][part] for k in ("input_ids", "attention_mask", "labels")}


def live_reference_logps(
    model: nn.Module, batch: dict[str, torch.Tensor], reference_context: ReferenceContext | None
) -> torch.Tensor:
    """log π_ref of every sequence, from the model inside the strategy's reference context (adapter off)."""
    context = reference_context(model) if reference_context else None
    if context is None:
        raise StropError(
            "precompute_ref_log_probs: false needs an adapter strategy (e.g. adapter: lora), whose "
            "base model is the reference; set it to true for full fine-tuning"
        )
    with torch.no_grad(), eval_mode(model), context:
        return sequence_logps(model, batch)[0]


def reference_logps(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    precomputed: bool,
    reference_context: ReferenceContext | None = None,
) -> torch.Tensor:
    if "ref_logps" in batch:
        return batch["ref_logps"]
    if precomputed:
        raise StropError(
            "reference log-probs are missing from the batch: objective.prepare_training(run) was "
            "not called before training"
        )
    return live_reference_logps(model, batch, reference_context)


# ---------------------------------------------------------------- the reference cache -----------------


def _read_cache(path: Path, identity: dict[str, str]) -> dict[str, tuple[float, float]]:
    if not path.is_file():
        return {}
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            if any(meta.get(k) != v for k, v in identity.items()):
                return {}
            values = handle.get_tensor("logps").tolist()
        return dict(zip(json.loads(meta["keys"]), map(tuple, values)))
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return {}  # unreadable or foreign: recompute (the model still equals the reference here)


def _write_cache(path: Path, identity: dict[str, str], cache: dict[str, tuple[float, float]]) -> None:
    keys = sorted(cache)
    with disk_errors(path), staged_file(path) as tmp:
        save_file(
            {"logps": torch.tensor([cache[k] for k in keys], dtype=torch.float64).reshape(-1, 2)},
            str(tmp),
            metadata={**identity, "keys": json.dumps(keys)},
        )


@torch.no_grad()
def compute_reference(
    model: nn.Module, rows: list[dict], collate: Callable, pad_id: int, batch_size: int, device: torch.device, amp_dtype
) -> list[tuple[float, float]]:
    """(first, second) reference log-prob of each row: chosen/rejected, or matched/mismatched for KTO."""
    from strop.runtime.precision import autocast

    out: list[tuple[float, float]] = []
    with eval_mode(model):
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            batch = {
                k: v.to(device)
                for k, v in collate([{k: v for k, v in r.items() if k != "ref"} for r in chunk], pad_id).items()
                if k in ("input_ids", "attention_mask", "labels") or k.startswith("vision.")
            }
            with autocast(device, amp_dtype):
                logps = sequence_logps(model, batch)[0].double().cpu()
            n = len(chunk)
            out += list(zip(logps[:n].tolist(), logps[n:].tolist()))
    return out


def prepare_reference(run: RunState, collate: Callable, kind: str) -> dict[str, int]:
    """Attach `ref` = (log π_ref first, log π_ref second) to every train and validation row, computing
    only the rows the on-disk cache lacks. Returns how many were cached and computed."""
    from strop.runtime.precision import autocast_dtype

    amp_dtype = autocast_dtype(run.cfg, run.device)
    identity = {
        "format": "strop-reference-logps/1",
        "kind": kind,
        "model": str(run.model_path),
        "autocast": str(amp_dtype),
    }
    out_dir = Path(run.cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REFERENCE_CACHE
    cache = _read_cache(path, identity)
    rows = list(run.train_rows) + list(run.val_rows)
    todo = list({r["key"]: r for r in rows if r["key"] not in cache}.values())
    if todo:  # under torchrun each rank computes every N-th row (the model is not sharded yet)
        n, rank = distributed.world_size(), distributed.rank()
        mine = compute_reference(
            run.model,
            todo[rank::n],
            collate,
            run.tokenizer.pad_token_id,
            max(run.cfg.micro_batch_size, 8),
            run.device,
            amp_dtype,
        )
        table = torch.zeros(len(todo), 2, dtype=torch.float64, device=run.device)
        table[rank::n] = torch.tensor(mine, dtype=torch.float64, device=run.device).reshape(-1, 2)
        values = distributed.sum_tensor(table).cpu().tolist()
        cache.update({r["key"]: tuple(v) for r, v in zip(todo, values)})
        if distributed.is_main():
            _write_cache(path, identity, cache)
    for row in rows:
        row["ref"] = cache[row["key"]]
    return {"cached": len(rows) - len(todo), "computed": len(todo)}


# ---------------------------------------------------------------- metrics -----------------------------


def pooled_means(values: dict[str, torch.Tensor], filler: bool) -> dict[str, float]:
    """The mean of each per-example tensor over its non-NaN entries and over the whole global
    micro-batch: under torchrun the ranks add up their sums and counts (a filler batch adds none), so
    each rank gets the mean one process reading the whole micro-batch would. One collective for all keys;
    every rank must call it with the same keys. NaN where no entry counts."""
    keys = sorted(values)
    flat = [values[k].detach().double().reshape(-1) for k in keys]
    valid = [~torch.isnan(v) for v in flat]
    local = torch.stack([torch.stack([v[m].sum(), m.sum().double()]) for v, m in zip(flat, valid)])
    totals = distributed.sum_tensor(local * (0.0 if filler else 1.0)).tolist()
    return {k: total / count if count else float("nan") for k, (total, count) in zip(keys, totals)}


def shares(
    per_example: torch.Tensor,
    metrics: dict[str, torch.Tensor],
    denominator: float,
    means: dict[str, float] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The micro-batch's share of the step loss, and of each metric's step mean.

    A metric is a per-example tensor, NaN where it does not apply (e.g. KTO's rewards/chosen on an
    undesirable example); its share is the mean over the examples it applies to, weighted by this
    micro-batch's share of the step's examples. `means` replaces those means (`pooled_means`: over all
    ranks' rows of the micro-batch, where a rank's own few rows would weigh the classes differently).
    """
    loss = per_example.sum() / denominator
    n = per_example.shape[0]
    out = {"loss": float(loss.detach())}
    for key, value in metrics.items():
        if means is not None:
            mean = means[key]
        else:
            value = value.detach().float().reshape(-1)
            valid = ~torch.isnan(value)
            mean = float(value[valid].mean()) if bool(valid.any()) else float("nan")
        out[key] = 0.0 if math.isnan(mean) else mean * n / denominator
    return loss, out


def pair_metrics(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """The metrics every pair objective logs, per example."""
    return {
        "rewards/chosen": chosen_rewards.detach(),
        "rewards/rejected": rejected_rewards.detach(),
        "rewards/margins": (chosen_rewards - rejected_rewards).detach(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
        "logps/chosen": chosen_logps.detach(),
        "logps/rejected": rejected_logps.detach(),
    }


class PairObjective(Objective):
    """Base of the objectives trained on {prompt, chosen, rejected}: data, collation, one concatenated
    forward pass of the 2B sequences, and (for those with a reference) the reference log-probs.

    A run gets its own instance (objectives.objective_for), which keeps the run's config as `cfg`.
    """

    needs_reference = False
    output_files = (REFERENCE_CACHE,)
    cfg = None
    #: The strategy's `reference_context`, set by `prepare_training`.
    reference_context: ReferenceContext | None = None

    def build_data(self, cfg: RunConfig, tokenizer, base_dir: Path | None):
        self.cfg = cfg
        return build_pair_data(cfg, tokenizer, base_dir, self.name)

    def collate(self, rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
        return collate_pairs(rows, pad_id)

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return batch["input_ids"].shape[0] // 2

    def prepare_training(self, run: RunState) -> None:
        self.cfg = run.cfg
        self.reference_context = run.strategy.reference_context
        if self.needs_reference and run.cfg.precompute_ref_log_probs:
            done = prepare_reference(run, self.collate, "pair")
            print(
                f"strop: reference log-probs: {done['cached']} rows from {REFERENCE_CACHE}, {done['computed']} computed"
            )

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], denominator: float):
        logps, lengths = sequence_logps(model, batch)
        ref = (
            reference_logps(model, batch, self.cfg.precompute_ref_log_probs, self.reference_context)
            if self.needs_reference
            else None
        )
        per_example, metrics = self.pair_loss(logps, lengths, ref)
        return shares(per_example, metrics, denominator)

    def pair_loss(self, logps: torch.Tensor, lengths: torch.Tensor, ref: torch.Tensor | None):
        """Per-pair losses and metrics from the 2B sequence log-probs (chosen first)."""
        raise NotImplementedError


def halves(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = values.shape[0] // 2
    return values[:n], values[n:]
