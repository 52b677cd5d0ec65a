"""`match`: exact match and normalised match of greedy replies against reference replies.

Exact match is the plainest learning metric for instruction tuning: the reply, stripped of surrounding
whitespace, must equal the reference. Normalised match forgives what a reader would not count as a
difference, with SQuAD's answer normalisation (Rajpurkar et al., 2016): lower case, punctuation and the
articles a/an/the removed, runs of whitespace collapsed. Rows are alpaca or chat (sharegpt) rows: the
last assistant message is the reference, everything before it the prompt.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Literal

from pydantic import Field

from strop.data.formats import FORMATS
from strop.errors import StropError
from strop.evaluation.base import EvalResult, EvaluatorType, Messages, Options, Subject, data_rows, last_user_text

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


class MatchOptions(Options):
    format: Literal["alpaca", "chat", "sharegpt"] = Field("alpaca", description="Row format of the file.")
    max_new_tokens: int = Field(32, gt=0, description="Tokens generated per reply.")


def normalize(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION))
    return " ".join(text.split())


def references(rows: list[tuple[str, dict]], kind: str) -> list[tuple[Messages, str]]:
    """(conversation prefix, reference reply) of each alpaca or chat row."""
    pairs = []
    for where, row in rows:
        messages = FORMATS[kind](row, where)["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        pairs.append((messages[:last], messages[last]["content"]))
    return pairs


def score_replies(replies: list[str], refs: list[str]) -> dict[str, float]:
    n = len(refs)
    return {
        "exact_match": sum(r.strip() == t.strip() for r, t in zip(replies, refs)) / n,
        "normalized_match": sum(normalize(r) == normalize(t) for r, t in zip(replies, refs)) / n,
    }


def build(options: MatchOptions, base_dir: Path | None):
    pairs = references(data_rows(options, base_dir), options.format)
    if any(not prefix for prefix, _ in pairs):
        raise StropError(f"match evaluator: {options.data}: a row has no prompt before its reference reply")

    def evaluate(subject: Subject) -> EvalResult:
        replies = [r[0] for r in subject.generate([p for p, _ in pairs], 1, 0.0, options.max_new_tokens)]
        samples = [
            {"prompt": last_user_text(p), "reference": ref, "reply": reply}
            for (p, ref), reply in list(zip(pairs, replies))[: options.samples]
        ]
        return EvalResult(score_replies(replies, [ref for _, ref in pairs]), samples)

    return evaluate


EVALUATOR = EvaluatorType(MatchOptions, build)
