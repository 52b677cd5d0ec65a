"""What `strop plan` learns from a data file: row count, format, length distribution, whether answers
can be checked by a reward (math, code tests, JSON schema) and whether it holds preference pairs.

The format is recognised from the first row's fields and every row is then run through the converter
strop's training uses for that format, so a row that training would refuse is refused here too, with
its file and line. Lengths are counted with the model's tokenizer when it loads; otherwise estimated
from words (1.3 tokens a word, the usual ratio for English BPE vocabularies) and said so.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from strop.errors import StropError

WORDS_TO_TOKENS = 1.3
#: Tokens a chat template adds around each message (role markers, separators); ChatML adds about 5.
TEMPLATE_TOKENS_PER_MESSAGE = 5
PROGRESS_FROM = 5_000  # rows: a smaller file is read before a bar would be worth drawing
_NUMBER = re.compile(r"^\s*-?[\d,]*\.?\d+\s*$")

#: Reward type and the row field it checks: what strop.rl.rewards can verify without a judge.
VERIFIERS = (("tests", "code"), ("schema", "json_schema"), ("answer", "math"))


@dataclass
class DataProfile:
    path: Path
    format: str  # a datasets[].type strop reads
    rows: int
    lengths: list[int]
    counted_with: str  # "tokenizer" or "word estimate"
    pairs: bool = False
    reward: tuple[str, str] | None = None  # (reward type, row field) when every row's answer is checkable
    notes: list[str] = field(default_factory=list)

    def percentile(self, share: float) -> int:
        """Nearest-rank percentile of the lengths (share in (0, 1])."""
        ordered = sorted(self.lengths)
        return ordered[max(0, math.ceil(share * len(ordered)) - 1)]

    @property
    def mean_length(self) -> float:
        return sum(self.lengths) / len(self.lengths)


def detect_format(row: dict[str, Any], where: str) -> str:
    """The dataset type a row's fields say it is."""
    keys = set(row)
    if {"chosen", "rejected"} <= keys:
        return "dpo"
    if {"prompt", "completion", "label"} <= keys:
        return "kto"
    if "messages" in keys or "conversations" in keys:
        items = row.get("messages") or row.get("conversations") or []
        last = items[-1] if isinstance(items, list) and items and isinstance(items[-1], dict) else {}
        return "chat" if (last.get("role") or last.get("from")) in ("assistant", "gpt", "model") else "prompt"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    if {"prompt", "completion"} <= keys:
        return "completion"
    if "text" in keys:
        return "text"
    if "prompt" in keys:
        return "prompt"
    raise StropError(
        f"{where}: cannot tell the row's format from its fields {sorted(keys)}: expected "
        "messages, instruction/output, prompt/completion, text, prompt/chosen/rejected or prompt"
    )


def _converter(kind: str):
    from strop.data.formats import FORMATS
    from strop.data.preference import PAIR_FORMATS, UNPAIRED_FORMATS
    from strop.data.prompts import PROMPT_FORMATS

    return {**PROMPT_FORMATS, **FORMATS, **UNPAIRED_FORMATS, **PAIR_FORMATS}[kind]


def _texts(value: Any) -> list[str]:
    """Every string inside a row value (message contents, nested lists), for counting length."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for k, v in value.items() if k not in ("role", "from") for t in _texts(v)]
    if isinstance(value, list):
        return [t for item in value for t in _texts(item)]
    return []


def _row_text(row: dict[str, Any], kind: str) -> tuple[str, int]:
    """The text a training example holds (the chosen answer only, for pairs) and its message count."""
    if kind == "dpo":
        parts = _texts(row.get("prompt")) + _texts(row.get("chosen"))
        return "\n".join(parts), 2
    if kind in ("chat", "prompt") and ("messages" in row or "conversations" in row):
        items = row.get("messages") or row.get("conversations") or []
        return "\n".join(_texts(items)), len(items)
    skip = {"answer", "tests", "schema", "label", "rejected"}
    parts = [t for k, v in row.items() if k not in skip for t in _texts(v)]
    return "\n".join(parts), 2


def _reward_for(rows: list[dict[str, Any]], kind: str) -> tuple[str, str] | None:
    """The verifiable reward every row supports: tests → code, schema → JSON schema, a numeric answer
    (or an alpaca output that is a number) → math."""
    for key, reward in VERIFIERS:
        if all(row.get(key) not in (None, "", []) for row in rows):
            if reward == "math" and not all(_NUMBER.match(str(row[key])) for row in rows):
                continue
            return reward, key
    if kind == "alpaca" and all(_NUMBER.match(str(row.get("output", ""))) for row in rows):
        return "math", "output"
    return None


def _counter(tokenizer):
    if tokenizer is None:
        return lambda text: math.ceil(len(text.split()) * WORDS_TO_TOKENS)
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def profile_file(path: str, tokenizer=None) -> DataProfile:
    """Read one dataset file and describe it; every row must convert as training would read it."""
    from strop.data.readers import read_rows

    rows = list(read_rows(path))
    if not rows:
        raise StropError(f"{path}: the dataset is empty")
    kind = detect_format(rows[0][1], rows[0][0])
    convert, count = _converter(kind), _counter(tokenizer)
    lengths = []
    with Progress(
        TextColumn(f"reading {Path(path).name}"),
        BarColumn(),
        MofNCompleteColumn(),
        transient=True,
        disable=len(rows) < PROGRESS_FROM,
    ) as progress:
        for where, row in progress.track(rows):
            if detect_format(row, where) != kind:
                raise StropError(
                    f"{where}: row format '{detect_format(row, where)}' differs from the first row's "
                    f"'{kind}'; give one format per file"
                )
            convert(row, where)
            text, messages = _row_text(row, kind)
            lengths.append(count(text) + TEMPLATE_TOKENS_PER_MESSAGE * messages)
    plain = [row for _, row in rows]
    return DataProfile(
        Path(path),
        kind,
        len(rows),
        lengths,
        "tokenizer" if tokenizer else "word estimate",
        pairs=kind == "dpo",
        reward=_reward_for(plain, kind) if kind in ("prompt", "alpaca") else None,
    )
