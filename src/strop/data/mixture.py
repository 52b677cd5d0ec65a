"""Task mixtures: how many rows each source contributes, by weight or temperature, and which rows.

The share of source i is p_i ∝ w_i^(1/T): T = 1 keeps the weights, T > 1 flattens them toward uniform
(the temperature sampling of multilingual pre-training, Arivazhagan et al. 2019; mT5), and with no
weight given a source weighs its row count, so T = 1 is size-proportional. Counts are the shares times
`total` rounded by largest remainder (they sum to `total` exactly). A source asked for more rows than it
has is repeated: each row once more before any row twice.

`strop data mix` writes such a mixture to a file (strop/datagen/mixture.py); `strop train` draws it
from its `datasets:` (`weight:` per entry, `mixture_temperature:`) and tags each token with its source,
so the loop can log loss, rows and tokens per dataset (`dataset_metrics`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import torch

from strop.errors import StropError
from strop.run_types import RunConfig

#: Per-token key of a tokenized example: the index of the dataset it came from (in `datasets:`).
DATASET_IDS = "dataset_ids"


def mixture_counts(
    sizes: Sequence[int], weights: Sequence[float | None], total: int, temperature: float = 1.0
) -> list[int]:
    """Rows to draw per source: shares ∝ weight^(1/T) (weight = size when None), largest remainder."""
    base = [float(size if w is None else w) for size, w in zip(sizes, weights)]
    scaled = [b ** (1.0 / temperature) if b > 0 else 0.0 for b in base]
    norm = sum(scaled)
    if norm <= 0:
        raise StropError("mixture: every source has weight 0")
    exact = [total * s / norm for s in scaled]
    counts = [int(e) for e in exact]
    order = sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def draw(size: int, count: int, rng: random.Random) -> list[int]:
    """`count` row indices from `size`: without replacement, then whole repeats of a shuffled order."""
    picks = []
    while count > 0:
        take = min(count, size)
        picks += rng.sample(range(size), take)
        count -= take
    return picks


def dataset_names(paths: Sequence[str]) -> list[str]:
    """Metric names of the datasets: the file stem, with its index appended where stems repeat."""
    stems = [Path(p).stem or f"dataset{i}" for i, p in enumerate(paths)]
    return [f"{s}{i}" if stems.count(s) > 1 else s for i, s in enumerate(stems)]


def is_mixture(cfg: RunConfig) -> bool:
    """Whether the config asks for a weighted mixture (a `weight:` on some dataset, or a temperature)."""
    return getattr(cfg, "mixture_temperature", None) is not None or any(
        spec.weight is not None for spec in cfg.datasets
    )


def mix_examples(examples: list[dict], cfg: RunConfig, notes: list[str]) -> list[dict]:
    """The training examples redrawn to the configured mixture: as many as there were, each dataset's
    share ∝ weight^(1/T) (weight: its example count when not given), seeded by `seed`."""
    n = len(cfg.datasets)
    groups: list[list[dict]] = [[] for _ in range(n)]
    for example in examples:
        groups[example[DATASET_IDS][0]].append(example)
    names = dataset_names([spec.path for spec in cfg.datasets])
    weights = [spec.weight for spec in cfg.datasets]
    sizes = [len(g) for g in groups]
    for name, size, weight in zip(names, sizes, weights):
        if size == 0 and weight != 0:
            raise StropError(f"mixture: dataset {name} has no training examples left to draw from")
    temperature = cfg.mixture_temperature or 1.0
    counts = mixture_counts(sizes, weights, len(examples), temperature)
    rng = random.Random(cfg.seed)
    mixed = [groups[d][i] for d, (size, count) in enumerate(zip(sizes, counts)) for i in draw(size, count, rng)]
    parts = [
        f"{name} {count} of {size}{' (repeated)' if count > size else ''}"
        for name, size, count in zip(names, sizes, counts)
    ]
    notes.append(f"mixture (T={temperature:g}): " + ", ".join(parts) + " examples")
    return mixed


def _targets(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Dataset id of each target position (aligned with labels[:, 1:]), -1 where nothing is learned."""
    ids = batch[DATASET_IDS][:, 1:]
    return ids.masked_fill(batch["labels"][:, 1:] == -100, -1)


def counts_by_dataset(batch: dict[str, torch.Tensor], n: int) -> dict[str, float]:
    """Examples (segments of packed rows) and target tokens of each dataset d < n in a collated batch
    still on the host."""
    ids = batch[DATASET_IDS]
    segments = batch.get("segment_ids")
    if segments is not None:
        starts = torch.ones_like(segments, dtype=torch.bool)
        starts[:, 1:] = segments[:, 1:] != segments[:, :-1]
        starts &= segments >= 0
    else:
        starts = torch.zeros_like(ids, dtype=torch.bool)
        starts[:, 0] = True
    targets = _targets(batch)
    out = {}
    for d in range(n):
        out[f"mixture.rows.{d}"] = float((starts & (ids == d)).sum())
        out[f"mixture.tokens.{d}"] = float((targets == d).sum())
    return out


def finish_metrics(totals: dict, names: Sequence[str], seen: dict[str, float]) -> dict:
    """Step totals with the raw `mixture.*` sums turned into `loss/<name>` (mean NLL per target token of
    that dataset in the step; absent when the step had none), `rows/<name>` and `tokens/<name>` (this
    step), and the cumulative `rows_seen/<name>` (kept in `seen` over the run)."""
    out = {k: v for k, v in totals.items() if not k.startswith("mixture.")}
    for d, name in enumerate(names):
        if f"mixture.rows.{d}" not in totals:
            continue
        rows, tokens = float(totals[f"mixture.rows.{d}"]), float(totals[f"mixture.tokens.{d}"])
        nll = totals.get(f"mixture.nll.{d}")
        if tokens and nll is not None:
            out[f"loss/{name}"] = nll / tokens
        out[f"rows/{name}"], out[f"tokens/{name}"] = rows, tokens
        seen[name] = seen.get(name, 0.0) + rows
        out[f"rows_seen/{name}"] = seen[name]
    return out
