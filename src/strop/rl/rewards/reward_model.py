"""`reward_model`: the score of a reward model trained with `rl: reward` (see strop/rl/reward_scorer.py).

`path` is that run's output folder, relative to the config's folder. The model is loaded on the first
call, not at build time, so validating a config stays cheap; a missing folder is reported at build time.
Scores are the model's raw outputs, not squashed: scale them with `weight`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from strop.errors import StropError
from strop.rl.rewards.base import Options, RewardType

if TYPE_CHECKING:
    from strop.rl.reward_scorer import RewardScorer


class RewardModelOptions(Options):
    path: str = Field(description="Output folder of an `rl: reward` run (relative to the config).")
    batch_size: int = Field(8, gt=0, description="(prompt, completion) pairs per forward pass.")


def build(options: RewardModelOptions, base_dir: Path | None):
    folder = Path(base_dir or ".") / options.path
    if not folder.is_dir():
        raise StropError(f"reward_model reward: folder not found: {folder} (train one with rl: reward)")
    loaded: list[RewardScorer] = []

    def score(prompts: list, completions: list[str], rows: list[dict]) -> list[float]:
        if not loaded:
            from strop.rl.reward_scorer import RewardScorer

            loaded.append(RewardScorer(folder))
        return loaded[0].score(prompts, completions, options.batch_size)

    return score


REWARD = RewardType(RewardModelOptions, build)
