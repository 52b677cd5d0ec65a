"""Rewards for RL with verifiable rewards (GRPO, PPO): one module per type, registered here.

A config lists them under `rewards:`, each a type, a weight, an optional metric name, and the type's
own options, flat:

    rewards:
      - {type: math, weight: 1.0}
      - {type: format, tags: [think, answer], weight: 0.2}
      - {type: length, max_chars: 4000, weight: 0.1}

Each spec is checked when the config is read — the type must exist and each option must belong to it,
an unknown one naming the closest valid key — so a typo fails before a model is loaded. A reward is a
function (prompts, completions, rows) -> one float per completion; the objective sums them weighted
(`score_rewards`) and logs each one unweighted under its name.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from strop.errors import StropError
from strop.rl.rewards import code, function, json_schema, length, match, math_answer, reward_model, trl_function
from strop.rl.rewards import format as format_shape
from strop.rl.rewards.base import Options, Reward, RewardError, RewardType

REWARDS: dict[str, RewardType] = {
    "math": math_answer.REWARD,
    "match": match.REWARD,
    "code": code.REWARD,
    "format": format_shape.REWARD,
    "json_schema": json_schema.REWARD,
    "length": length.REWARD,
    "reward_model": reward_model.REWARD,
    "function": function.REWARD,
    "trl_function": trl_function.REWARD,
}

__all__ = ["REWARDS", "Reward", "RewardSpec", "build_rewards", "score_rewards"]


def _option_keys(options: type[Options]) -> list[str]:
    return [spec.alias or name for name, spec in options.model_fields.items()]


class RewardSpec(BaseModel):
    """One entry of `rewards:`: `type`, `weight`, `name`, plus the type's own options."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description=f"Reward type: one of {', '.join(REWARDS)}.")
    weight: float = Field(1.0, description="Multiplier of this reward in the total.")
    name: str | None = Field(None, description="Metric name (default: the type; type_2, ... when repeated).")

    @model_validator(mode="after")
    def _check_options(self) -> RewardSpec:
        if self.type not in REWARDS:
            raise ValueError(f"unknown reward type '{self.type}' (known: {', '.join(sorted(REWARDS))})")
        self.options()
        return self

    def options(self) -> Options:
        """The type's own options, validated; a ValueError naming a bad key otherwise."""
        options = REWARDS[self.type].options
        valid = _option_keys(options)
        for key in self.model_extra or {}:
            if key not in valid:
                close = difflib.get_close_matches(key, valid + ["type", "weight", "name"], n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise ValueError(
                    f"unknown option '{key}' for reward type '{self.type}'{hint} "
                    f"(its options: {', '.join(valid) or 'none'})"
                )
        try:
            return options.model_validate(self.model_extra or {})
        except ValidationError as err:
            raise ValueError(f"reward type '{self.type}': {_problems(err)}") from None


def _problems(err: ValidationError) -> str:
    problems = []
    for item in err.errors():
        where, message = ".".join(str(p) for p in item["loc"]), item["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


def _names(specs: list[RewardSpec]) -> list[str]:
    """Explicit names as given (they must be unique); the rest are the type, then type_2, type_3, ..."""
    explicit = [spec.name for spec in specs if spec.name]
    if len(set(explicit)) != len(explicit):
        raise StropError(f"rewards: names must be unique (got {', '.join(explicit)})")
    taken, names = set(explicit), []
    for spec in specs:
        name, count = spec.name or spec.type, 1
        while not spec.name and name in taken:
            count += 1
            name = f"{spec.type}_{count}"
        taken.add(name)
        names.append(name)
    return names


def build_rewards(specs: list[RewardSpec], base_dir: Path | None = None) -> list[Reward]:
    """The rewards, ready to score; `base_dir` (the config's folder) resolves relative paths."""
    specs = [spec if isinstance(spec, RewardSpec) else RewardSpec.model_validate(spec) for spec in specs]
    rewards = []
    for spec, name in zip(specs, _names(specs)):
        try:
            options = spec.options()
        except ValueError as err:
            raise StropError(f"rewards: {err}") from err
        rewards.append(Reward(name, spec.weight, REWARDS[spec.type].build(options, base_dir)))
    return rewards


def score_rewards(
    rewards: list[Reward], prompts: list, completions: list[str], rows: list[dict], where: list[str] | None = None
) -> tuple[list[float], dict[str, list[float]]]:
    """(total, per_reward): total[i] = sum_k weight_k * reward_k[i]; per_reward holds the raw scores.
    `where` (each completion's dataset row, "prompts.jsonl:7") lets an error name the row."""
    if not len(prompts) == len(completions) == len(rows):
        raise ValueError(f"score_rewards: {len(prompts)} prompts, {len(completions)} completions, {len(rows)} rows")
    total = [0.0] * len(completions)
    per_reward: dict[str, list[float]] = {}
    for reward in rewards:
        try:
            scores = [float(s) for s in reward.fn(prompts, completions, rows)]
        except RewardError as err:
            if where is None:
                raise
            raise StropError(f"{where[err.index]}: {err}") from err
        if len(scores) != len(completions):
            raise StropError(f"reward '{reward.name}' returned {len(scores)} scores for {len(completions)} completions")
        per_reward[reward.name] = scores
        total = [t + reward.weight * s for t, s in zip(total, scores)]
    return total, per_reward
