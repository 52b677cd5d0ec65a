"""Row filters: each looks at a batch of rows and says, for each, why it drops it (or None to keep it).

A reason is (label, detail): the label is what the summary counts ("near duplicate"), the detail what
the rejects file records for that row ("J≈0.91 with data.jsonl:3"). Filters run in the order given,
cheap ones first, so an expensive judge never scores a row a length check has already dropped.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from strop.data.readers import read_rows
from strop.datagen.language import detect
from strop.datagen.minhash import NearDuplicateIndex, shingles, words
from strop.datagen.rows import row_text, row_texts
from strop.errors import StropError

Item = tuple[str, dict[str, Any]]  # (where, row)
Reason = tuple[str, str] | None


class Filter:
    """Base: `name`, `settings` for the card, and `check_batch` (default: `check` row by row)."""

    name = "filter"

    def settings(self) -> dict[str, Any]:
        return {}

    def check(self, where: str, row: dict[str, Any]) -> Reason:
        raise NotImplementedError

    def check_batch(self, items: Sequence[Item]) -> list[Reason]:
        return [self.check(where, row) for where, row in items]


class Length(Filter):
    """Drop rows whose `part` ("prompt", "response" or "row") is shorter or longer than the bounds, in words."""

    name = "length"

    def __init__(self, min_words: int = 0, max_words: int | None = None, part: str = "response"):
        if part not in ("prompt", "response", "row"):
            raise StropError(f"length filter: part must be prompt, response or row, got {part!r}")
        self.min_words, self.max_words, self.part = min_words, max_words, part

    def settings(self) -> dict[str, Any]:
        return {"min_words": self.min_words, "max_words": self.max_words, "part": self.part}

    def check(self, where: str, row: dict[str, Any]) -> Reason:
        prompt, response = row_texts(row)
        text = {"prompt": prompt, "response": response, "row": f"{prompt}\n{response}"}[self.part]
        count = len(words(text))
        if count < self.min_words:
            return "too short", f"{self.part} has {count} words < {self.min_words}"
        if self.max_words is not None and count > self.max_words:
            return "too long", f"{self.part} has {count} words > {self.max_words}"
        return None


class Language(Filter):
    """Keep rows whose text is in one of `languages` (ISO 639-1 codes), by `language.detect`."""

    name = "language"

    def __init__(self, languages: Sequence[str]):
        self.languages = set(languages)

    def settings(self) -> dict[str, Any]:
        return {"languages": sorted(self.languages)}

    def check(self, where: str, row: dict[str, Any]) -> Reason:
        found = detect(row_text(row))
        return None if found in self.languages else (f"language {found}", f"detected {found}")


class ExactDedup(Filter):
    """Drop a row whose text, lower-cased with punctuation and spacing ignored, was seen before."""

    name = "exact-dedup"
    stateful = True  # its verdict depends on the rows before: a resumed pass replays them

    def __init__(self) -> None:
        self.seen: dict[bytes, str] = {}

    def check(self, where: str, row: dict[str, Any]) -> Reason:
        digest = hashlib.blake2b(" ".join(words(row_text(row))).encode("utf-8"), digest_size=16).digest()
        first = self.seen.setdefault(digest, where)
        return None if first == where else ("exact duplicate", f"same text as {first}")


class NearDedup(Filter):
    """Drop a row whose MinHash-estimated Jaccard similarity to an earlier kept row is ≥ threshold."""

    name = "near-dedup"
    stateful = True

    def __init__(self, threshold: float = 0.8, ngram: int = 5, num_perm: int = 128, seed: int = 1):
        self.index = NearDuplicateIndex(threshold, num_perm, ngram, seed)
        self.config = {
            "threshold": threshold,
            "ngram": ngram,
            "num_perm": num_perm,
            "seed": seed,
            "bands": self.index.bands,
            "rows_per_band": self.index.rows,
        }

    def settings(self) -> dict[str, Any]:
        return self.config

    def check(self, where: str, row: dict[str, Any]) -> Reason:
        found = self.index.find(row_text(row), where)
        return None if found is None else ("near duplicate", f"J≈{found[1]:.2f} with {found[0]}")


class Decontaminate(Filter):
    """Drop a row sharing word n-grams with an evaluation set (the GPT-3 paper's 13-gram test): dropped
    when at least one n-gram is shared and the shared share of the row's n-grams is ≥ threshold."""

    name = "decontaminate"

    def __init__(self, eval_paths: Sequence[str], ngram: int = 13, threshold: float = 0.0):
        self.eval_paths, self.ngram, self.threshold = list(eval_paths), ngram, threshold
        self.grams: dict[str, tuple[str, str]] = {}  # n-gram -> (eval file, first row holding it)
        for path in self.eval_paths:
            for where, row in read_rows(path):
                for gram in shingles(row_text(row), ngram):
                    self.grams.setdefault(gram, (path, where))
        if not self.grams:
            raise StropError(f"decontaminate: no text in the evaluation file(s) {', '.join(self.eval_paths)}")

    def settings(self) -> dict[str, Any]:
        return {
            "eval_files": self.eval_paths,
            "ngram": self.ngram,
            "threshold": self.threshold,
            "eval_ngrams": len(self.grams),
        }

    def check(self, where: str, row: dict[str, Any]) -> Reason:
        grams = shingles(row_text(row), self.ngram)
        hits = [gram for gram in grams if gram in self.grams]
        share = len(hits) / len(grams) if grams else 0.0
        if hits and share >= self.threshold:
            path, source = self.grams[hits[0]]
            return (
                f"contaminated ({Path(path).name})",
                f"{share:.0%} of {self.ngram}-grams in the eval set, e.g. {source}",
            )
        return None


class JudgeScore(Filter):
    """Drop rows a pointwise judge scores below `min_score` (on the judge's scale); a judge answer that
    cannot be read drops the row too, counted apart."""

    name = "judge-score"

    def __init__(self, judge, min_score: float):
        self.judge, self.min_score = judge, min_score

    def settings(self) -> dict[str, Any]:
        return {"judge": self.judge.describe(), "min_score": self.min_score}

    def check_batch(self, items: Sequence[Item]) -> list[Reason]:
        pairs = [row_texts(row) for _, row in items]
        scores = self.judge.score_many(pairs)
        return [
            ("judge answer unparseable", "no score in the judge's answer")
            if math.isnan(s)
            else ("low judge score", f"score {s:g} < {self.min_score:g}")
            if s < self.min_score
            else None
            for s in scores
        ]


class Difficulty(Filter):
    """Keep prompts a model solves at a pass rate in [low, high]: `pass_rates(items)` samples k answers
    per prompt and checks them with a verifiable reward (see difficulty.py)."""

    name = "difficulty"

    def __init__(
        self,
        pass_rates: Callable[[Sequence[Item]], list[tuple[int, int]]],
        low: float,
        high: float,
        settings: dict[str, Any],
    ):
        self.pass_rates, self.low, self.high, self.config = pass_rates, low, high, settings

    def settings(self) -> dict[str, Any]:
        return {**self.config, "low": self.low, "high": self.high}

    def check_batch(self, items: Sequence[Item]) -> list[Reason]:
        reasons: list[Reason] = []
        for passed, total in self.pass_rates(items):
            rate = passed / total
            if rate < self.low:
                reasons.append(("too hard", f"passed {passed}/{total} < {self.low:g}"))
            elif rate > self.high:
                reasons.append(("too easy", f"passed {passed}/{total} > {self.high:g}"))
            else:
                reasons.append(None)
        return reasons
