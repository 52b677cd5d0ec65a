"""Forgetting: what tuning gained on the target task and what it cost on general ability, as two numbers.

Fine-tuning trades stability for plasticity (the survey's central question: specialisation without
forgetting): a model can gain on its task while losing what it knew. So the base and the tuned model are
both scored on the target task and on a general held-out set, and the report is the change on each:

    target change  = target(tuned) − target(base)      (the gain the tuning was for)
    general change = general(tuned) − general(base)    (forgetting when it moves the wrong way)

Each side's headline is its evaluator's first metric (exact match for `match`, perplexity for
`perplexity`, ...); `higher_is_better` says which way is good, so a rise in perplexity reads as a loss.
The general set is a spec, or a file whose kind is recognised: `.txt` or rows with `text` → perplexity,
alpaca rows → match, chat rows → match on the last assistant turn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from strop.data.readers import read_rows, resolve_data_path
from strop.errors import StropError
from strop.evaluation import NamedEvaluator, Subject, build_evaluators
from strop.evaluation.base import EvalResult

LOWER_IS_BETTER = ("perplexity", "nll_per_token", "losses")


def general_spec(value: str | dict[str, Any], base_dir: Path | None = None) -> dict[str, Any]:
    """The evaluator spec of the general set: as given, or recognised from the file."""
    if isinstance(value, dict):
        return {"name": "general", **value}
    path = resolve_data_path(value, base_dir)
    if path is None:
        raise StropError(f"eval_forgetting: dataset file not found: {value}")
    if path.suffix == ".txt":
        return {"type": "perplexity", "name": "general", "data": str(path)}
    first = next(iter(read_rows(str(path))), None)
    if first is None:
        raise StropError(f"eval_forgetting: {path} holds no rows")
    where, row = first
    if "text" in row:
        return {"type": "perplexity", "name": "general", "data": str(path)}
    if "instruction" in row:
        return {"type": "match", "name": "general", "data": str(path), "format": "alpaca"}
    if "messages" in row or "conversations" in row:
        return {"type": "match", "name": "general", "data": str(path), "format": "chat"}
    raise StropError(
        f"{where}: eval_forgetting cannot tell what to measure on this row (fields: "
        f"{', '.join(sorted(row))}); use text rows, alpaca or chat rows, or give a spec {{type: ..., data: ...}}"
    )


def build_general(value: str | dict[str, Any], base_dir: Path | None = None) -> NamedEvaluator:
    return build_evaluators([general_spec(value, base_dir)], base_dir, "eval_forgetting")[0]


def headline(result: EvalResult) -> tuple[str, float]:
    """An evaluator's first metric: the one its side of the comparison is judged on."""
    name = next(iter(result.metrics))
    return name, result.metrics[name]


def higher_is_better(metric: str) -> bool:
    return not metric.rsplit("/", 1)[-1].startswith(LOWER_IS_BETTER)


def compare(base: dict[str, EvalResult], tuned: dict[str, EvalResult], general: str = "general") -> dict[str, Any]:
    """Every metric before and after, and the two headline changes (target: the first non-general
    evaluator)."""
    if general not in base:
        raise ValueError(f"forgetting: no '{general}' evaluator among {', '.join(base)}")
    metrics = {
        key: {
            "base": base[name].metrics[key],
            "tuned": tuned[name].metrics[key],
            "change": tuned[name].metrics[key] - base[name].metrics[key],
        }
        for name in base
        for key in base[name].metrics
    }
    out: dict[str, Any] = {"metrics": metrics}
    targets = [name for name in base if name != general]
    for side, name in (("target", targets[0] if targets else None), ("general", general)):
        if name is None:
            continue
        key, _ = headline(base[name])
        out[side] = {"metric": key, **metrics[key], "higher_is_better": higher_is_better(key)}
    return out


def evaluate_both(evaluators: list[NamedEvaluator], base: Subject, tuned: Subject) -> dict[str, Any]:
    """Run every evaluator (one named 'general') on the base and the tuned model and compare."""
    before = {e.name: e(base) for e in evaluators}
    after = {e.name: e(tuned) for e in evaluators}
    return compare(before, after) | {
        "samples": {
            "base": {k: v.samples for k, v in before.items()},
            "tuned": {k: v.samples for k, v in after.items()},
        }
    }


def describe(result: dict[str, Any]) -> list[str]:
    """One line per side: metric, base → tuned (change), and whether it moved the good way."""
    lines = []
    for side in ("target", "general"):
        if side not in result:
            continue
        item = result[side]
        good = (item["change"] >= 0) == item["higher_is_better"]
        lines.append(
            f"{side}: {item['metric']} {item['base']:.4g} -> {item['tuned']:.4g} "
            f"(change {item['change']:+.4g}, {'better' if good or item['change'] == 0 else 'worse'})"
        )
    return lines
