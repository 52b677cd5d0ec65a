"""What every reward shares: the built `Reward`, the per-type registration record, and the two rules
that keep one bad completion from stopping a run.

Rule 1: a malformed completion (no answer, broken JSON, code that crashes) scores 0 — the policy is
expected to produce garbage early in training. Rule 2: a misconfigured reward (the dataset row lacks
the field the reward reads) raises StropError naming the field and the reward — that is the user's to
fix, and silently scoring 0 would train on nonsense.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from strop.errors import StropError

#: (prompts, completions, rows) -> one float per completion.
RewardFn = Callable[[list, list[str], list[dict]], list[float]]


class Options(BaseModel):
    """Base of each reward type's own options: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class RewardError(StropError):
    """A reward failed on one completion of the batch (`index`), so the caller, which knows the
    batch's dataset rows, can name the row."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


@dataclass(frozen=True)
class RewardType:
    """A registered reward type: its options model and `build(options, base_dir) -> RewardFn`."""

    options: type[Options]
    build: Callable[[Any, Path | None], RewardFn]


@dataclass
class Reward:
    """A built reward, ready to score: `name` is its metric name, `weight` its share of the total."""

    name: str
    weight: float
    fn: RewardFn


def row_field(row: dict, field: str, reward: str) -> Any:
    """`row[field]`, or a StropError that says which reward wanted which field."""
    if field not in row or row[field] is None:
        raise StropError(
            f"{reward} reward: the dataset row has no '{field}' field "
            f"(present: {', '.join(sorted(row)) or 'none'}); add it or set the reward's `field` option"
        )
    return row[field]


def per_completion(score_one: Callable[[Any, str, dict], float]) -> RewardFn:
    """Lift `score_one(prompt, completion, row)` to a batch reward that scores 0 where it raises
    (a malformed completion) but lets StropError (a misconfigured reward) through, as a RewardError
    that knows which row it was."""

    def score(prompts: list, completions: list[str], rows: list[dict]) -> list[float]:
        scores = []
        for index, (prompt, completion, row) in enumerate(zip(prompts, completions, rows)):
            try:
                scores.append(float(score_one(prompt, completion, row)))
            except RewardError:
                raise
            except StropError as err:
                raise RewardError(str(err), index) from err
            except Exception:
                scores.append(0.0)
        return scores

    return score
