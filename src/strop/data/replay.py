"""Replay for continual fine-tuning: a share of general-data rows mixed into the task's training rows, so
the model keeps rehearsing what it already did well while it learns the task (experience replay; with
L2-SP, `l2sp_alpha`, the survey's two answers to forgetting).

    replay: {path: general.jsonl, type: alpaca, share: 0.2}

With N task rows, round(share / (1 − share) · N) general rows join them, so that they are `share` of the
mixture: drawn without replacement, seeded by `seed`, when the file has enough rows, else the whole file
repeated and the rest drawn. The rows go through the same format conversion, tokenization and length
rules as the task's (the objective must read their type), and join before the validation split.

A thin alias on purpose: it is one more source of rows after `datasets:`, so it maps onto per-dataset
mixture weights without changing meaning.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from strop.data.axolotl_types import dataset_rows
from strop.data.readers import read_rows
from strop.run_types import RunConfig

Rows = Iterator[tuple[str, dict[str, Any]]]


class ReplaySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="General-data file (or hub dataset id), as in datasets:.")
    type: str = Field(description="Its row format; one the objective reads (alpaca, chat, text, dpo, ...).")
    share: float = Field(gt=0, lt=1, description="Share of the training rows that come from this file.")
    split: str = Field("train", description="Split to read when path is a hub dataset.")
    name: str | None = Field(None, description="Hub dataset configuration (subset) name.")


def replay_count(share: float, task_rows: int) -> int:
    return round(share / (1 - share) * task_rows)


def replay_rows(cfg: RunConfig, base_dir: Path | None, task_rows: int) -> Rows:
    """The general rows for a mixture with `task_rows` task rows."""
    spec: ReplaySpec = cfg.replay
    rows = list(read_rows(spec.path, base_dir, spec.split, spec.name))
    wanted = replay_count(spec.share, task_rows)
    rng = random.Random(f"replay:{cfg.seed}")
    picked = rows * (wanted // len(rows)) + rng.sample(rows, wanted % len(rows)) if rows else []
    for where, row in picked:
        yield f"{where} (replay)", row


def source_paths(cfg: RunConfig) -> list[str]:
    """The path of every source of training rows, in the order `sources` yields them (the dataset index
    each token carries under several sources, and the per-dataset metric names)."""
    replay = getattr(cfg, "replay", None)
    return [spec.path for spec in cfg.datasets] + ([replay.path] if replay is not None else [])


def sources(cfg: RunConfig, base_dir: Path | None, rows_read: Callable[[], int]) -> Iterator[tuple[Any, Rows]]:
    """(spec, its rows) for every `datasets:` entry, then the replay file sized by `rows_read()`, the task
    rows counted once the datasets have been read."""
    for spec in cfg.datasets:
        yield spec, dataset_rows(cfg, spec, base_dir)
    if getattr(cfg, "replay", None) is not None:
        yield cfg.replay, replay_rows(cfg, base_dir, rows_read())
