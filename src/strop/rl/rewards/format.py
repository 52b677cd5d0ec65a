"""`format`: 1.0 when the completion has the required shape, else 0.0.

`pattern` is a regular expression (re.DOTALL) that must match the whole stripped completion.
`tags`, e.g. ["think", "answer"], asks for each <tag>...</tag> exactly once, in that order, not
nested in one another. Given both, both must hold. The usual reasoning-format reward for GRPO.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from strop.rl.rewards.base import Options, RewardType, per_completion


class FormatOptions(Options):
    pattern: str | None = Field(None, description="Regex (DOTALL) the whole stripped completion must match.")
    tags: list[str] | None = Field(
        None, description="Tags that must each appear once as <tag>...</tag>, in this order."
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as err:
                raise ValueError(f"pattern is not a valid regular expression: {err}") from err
        return value

    @model_validator(mode="after")
    def _something(self) -> FormatOptions:
        if not self.pattern and not self.tags:
            raise ValueError("format reward: give `pattern` and/or `tags`")
        return self


def tags_in_order(text: str, tags: list[str]) -> bool:
    """Each <tag>...</tag> once, in order, each closed before the next opens."""
    position = 0
    for tag in tags:
        opening, closing = f"<{tag}>", f"</{tag}>"
        if text.count(opening) != 1 or text.count(closing) != 1:
            return False
        start, end = text.find(opening), text.find(closing)
        if start < position or end < start:
            return False
        position = end + len(closing)
    return True


def build(options: FormatOptions, base_dir: Path | None):
    pattern = re.compile(options.pattern, re.DOTALL) if options.pattern else None

    def score_one(prompt, completion: str, row: dict) -> float:
        text = completion.strip()
        if pattern is not None and not pattern.fullmatch(text):
            return 0.0
        return float(not options.tags or tags_in_order(text, options.tags))

    return per_completion(score_one)


REWARD = RewardType(FormatOptions, build)
