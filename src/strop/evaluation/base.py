"""What every evaluator shares: the model under evaluation (`Subject`), the one batched generation path,
the result record, and the per-type registration record.

Why one generation path: every generative evaluator (match, pass@k, win rate) asks the same question
("what does this model answer to these conversations, n times?"), so decoding settings, batching and
chat templates are decided once, in `ModelGenerator`, on top of `strop.models.generate.answer`. Tests swap in
a generator with canned replies, which is how their expected values stay hand-computable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, overload

import torch
from pydantic import BaseModel, ConfigDict, Field

from strop.data.formats import _message
from strop.data.readers import read_rows, resolve_data_path
from strop.errors import StropError

Messages = list[dict[str, str]]


class Generator(Protocol):
    def __call__(
        self, conversations: list[Messages], n: int = 1, temperature: float = 0.0, max_new_tokens: int = 64
    ) -> list[list[str]]:
        """`n` replies to each conversation."""


class ModelGenerator:
    """`n` replies per conversation from a model: the conversations are repeated n times and decoded
    in batches by `strop.models.generate.answer` (greedy at temperature 0, sampled otherwise); `seed` makes
    sampled evaluations repeatable."""

    def __init__(self, model: torch.nn.Module, tokenizer, batch_size: int = 8, seed: int = 0):
        self.model, self.tokenizer, self.batch_size, self.seed = model, tokenizer, batch_size, seed

    def __call__(
        self, conversations: list[Messages], n: int = 1, temperature: float = 0.0, max_new_tokens: int = 64
    ) -> list[list[str]]:
        from strop.models.generate import answer

        repeated = [c for c in conversations for _ in range(n)]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            flat = answer(self.model, self.tokenizer, repeated, max_new_tokens, temperature, self.batch_size)
        return [flat[i * n : (i + 1) * n] for i in range(len(conversations))]


@dataclass
class Subject:
    """The model under evaluation: weights for scoring evaluators, a generator for generative ones."""

    model: Any
    tokenizer: Any
    generate: Generator

    @classmethod
    def of(cls, model, tokenizer, batch_size: int = 8, seed: int = 0) -> Subject:
        return cls(model, tokenizer, ModelGenerator(model, tokenizer, batch_size, seed))


@dataclass
class EvalResult:
    """Metrics (name -> number) and a few examples (prompt, reference, reply...) for the report."""

    metrics: dict[str, float]
    samples: list[dict[str, Any]] = field(default_factory=list)


class Options(BaseModel):
    """Options every evaluator has; each type adds its own. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="Evaluator type.")
    name: str | None = Field(None, description="Metric prefix (default: the type).")
    data: str = Field(description="Local file the evaluator reads (relative to the config's folder).")
    limit: int | None = Field(None, gt=0, description="Use only the first N rows.")
    samples: int = Field(3, ge=0, description="Examples kept for the report.")


Evaluator = Callable[[Subject], EvalResult]


@dataclass(frozen=True)
class EvaluatorType:
    """A registered evaluator: its options model and `build(options, base_dir) -> Evaluator`, which
    reads and checks its file (so a bad file fails before any model is loaded)."""

    options: type[Options]
    build: Callable[[Any, Path | None], Evaluator]


def data_rows(options: Options, base_dir: Path | None) -> list[tuple[str, dict]]:
    """(location, row) pairs of the evaluator's file, at most `limit`; a clear error if it is missing
    or empty."""
    path = resolve_data_path(options.data, base_dir)
    if path is None:
        raise StropError(f"{options.type} evaluator: dataset file not found: {options.data}")
    rows = list(read_rows(str(path)))[: options.limit]
    if not rows:
        raise StropError(f"{options.type} evaluator: {path} holds no rows")
    return rows


def read_prompt(row: dict, where: str, key: str = "prompt") -> Messages:
    """A prompt field: a string (one user turn) or a list of chat messages."""
    value = row.get(key)
    if isinstance(value, str) and value.strip():
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and value:
        return [_message(item, where, i, sharegpt=False) for i, item in enumerate(value)]
    raise StropError(f"{where}: field '{key}' must be a non-empty string or list of chat messages")


def last_user_text(prompt: Messages) -> str:
    return next((m["content"] for m in reversed(prompt) if m["role"] == "user"), prompt[-1]["content"])


@overload
def local_path(value: str, base_dir: Path | None) -> str: ...


@overload
def local_path(value: None, base_dir: Path | None) -> None: ...


@overload
def local_path(value: str | None, base_dir: Path | None) -> str | None: ...


def local_path(value: str | None, base_dir: Path | None) -> str | None:
    """A model folder option, relative to the config's folder when it exists there."""
    if value is None or base_dir is None or Path(value).is_absolute():
        return value
    candidate = base_dir / value
    return str(candidate) if candidate.exists() else value
