"""`match`: 1.0 when the completion gives the row's reference text, else 0.0.

For tasks with one right short answer that is not a number (a label, a class, a word): the completion
and the row's `field` (default "output") are compared after trimming, case folding and collapsing
whitespace — exactly (the default) or, with `contains: true`, the reference anywhere in the completion.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from strop.rl.rewards.base import Options, RewardType, per_completion, row_field


class MatchOptions(Options):
    field: str = Field("output", description="Row field holding the reference answer.")
    contains: bool = Field(False, description="Reward a completion that contains the reference (default: equals it).")


def normalise(text: str) -> str:
    return " ".join(text.casefold().split())


def build(options: MatchOptions, base_dir: Path | None):
    def score_one(prompt, completion: str, row: dict) -> float:
        reference = normalise(str(row_field(row, options.field, "match")))
        text = normalise(completion)
        return float(reference in text if options.contains else reference == text)

    return per_completion(score_one)


REWARD = RewardType(MatchOptions, build)
