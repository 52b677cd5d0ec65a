"""`length`: a penalty for long completions, in characters.

    reward(n) = 0                                      for n <= target_chars
              = -(n - target_chars) / (max_chars - target_chars)   in between
              = -1                                     for n >= max_chars

`target_chars` defaults to max_chars / 2: half the budget is free, the rest costs linearly. Give it a
small weight next to the task reward so it breaks ties between right answers rather than deciding them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from strop.rl.rewards.base import Options, RewardType, per_completion


class LengthOptions(Options):
    max_chars: int = Field(gt=0, description="Completions this long or longer score -1.")
    target_chars: int | None = Field(
        None, ge=0, description="Completions this long or shorter score 0 (default max_chars / 2)."
    )

    @model_validator(mode="after")
    def _below_max(self) -> LengthOptions:
        if self.target_chars is not None and self.target_chars >= self.max_chars:
            raise ValueError(f"target_chars ({self.target_chars}) must be below max_chars ({self.max_chars})")
        return self


def length_penalty(chars: int, max_chars: int, target_chars: float) -> float:
    if chars <= target_chars:
        return 0.0
    return -min(1.0, (chars - target_chars) / (max_chars - target_chars))


def build(options: LengthOptions, base_dir: Path | None):
    target = options.max_chars / 2 if options.target_chars is None else options.target_chars
    return per_completion(lambda prompt, completion, row: length_penalty(len(completion), options.max_chars, target))


REWARD = RewardType(LengthOptions, build)
