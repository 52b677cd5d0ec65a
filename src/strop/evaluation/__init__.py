"""Evaluation: did tuning help, and what did it cost.

Evaluators are registered here by type; each reads a local file and scores a `Subject` (a model, its
tokenizer and the one batched generation path). A spec, in a training config's `evaluators:` list, an
`eval_forgetting:` key or a `strop eval --evals` file, is a type, an optional name, the file, and the
type's own options, flat:

    evaluators:
      - {type: match, data: held_out.jsonl, format: alpaca}
      - {type: pass_at_k, data: gsm8k_test.jsonl, reward: math, n: 8, k: [1, 4]}
      - {type: preference, data: pairs.jsonl, beta: 0.1}
      - {type: win_rate, data: prompts.jsonl, baseline_field: gpt_reply, reward_model: ./rm}
      - {type: perplexity, data: wiki.txt}

Metrics are named `<name>/<metric>` (name defaults to the type), e.g. `match/exact_match`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from strop.errors import StropError
from strop.evaluation import match, passk, perplexity, preference, winrate
from strop.evaluation.base import EvalResult, Evaluator, EvaluatorType, ModelGenerator, Subject

EVALUATORS: dict[str, EvaluatorType] = {
    "match": match.EVALUATOR,
    "pass_at_k": passk.EVALUATOR,
    "preference": preference.EVALUATOR,
    "win_rate": winrate.EVALUATOR,
    "perplexity": perplexity.EVALUATOR,
}

__all__ = [
    "EVALUATORS",
    "EvalResult",
    "ModelGenerator",
    "NamedEvaluator",
    "Subject",
    "build_evaluators",
    "check_specs",
    "run_evaluators",
]


class NamedEvaluator:
    """A built evaluator and the name its metrics are logged under."""

    def __init__(self, name: str, evaluate: Evaluator):
        self.name, self.evaluate = name, evaluate

    def __call__(self, subject: Subject) -> EvalResult:
        result = self.evaluate(subject)
        return EvalResult({f"{self.name}/{k}": v for k, v in result.metrics.items()}, result.samples)


def parse_spec(spec: Any, where: str = "evaluators") -> Any:
    """A spec's validated options; the error names the entry, the bad key and the closest valid one."""
    if isinstance(spec, str):
        raise StropError(f"{where}: expected a mapping such as {{type: match, data: {spec}}}, got a string")
    if not isinstance(spec, dict) or "type" not in spec:
        raise StropError(f"{where}: each evaluator needs a 'type' (one of {', '.join(EVALUATORS)})")
    kind = EVALUATORS.get(spec["type"])
    if kind is None:
        raise StropError(f"{where}: unknown evaluator type '{spec['type']}' (known: {', '.join(EVALUATORS)})")
    valid = list(kind.options.model_fields)
    for key in spec:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            raise StropError(
                f"{where}: unknown option '{key}' for evaluator '{spec['type']}'"
                + (f"; did you mean '{close[0]}'?" if close else f" (its options: {', '.join(valid)})")
            )
    try:
        return kind.options.model_validate(spec)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or spec['type']}: {e['msg'].removeprefix('Value error, ')}"
            for e in err.errors()
        )
        raise StropError(f"{where}: {problems}") from None


def check_specs(specs: list[Any], where: str = "evaluators") -> None:
    """Validate specs without reading their files (config time)."""
    names = [parse_spec(spec, f"{where}[{i}]").name or spec["type"] for i, spec in enumerate(specs)]
    if len(set(names)) != len(names):
        raise StropError(f"{where}: two evaluators share a name ({', '.join(names)}); give them distinct `name`s")


def build_evaluators(specs: list[Any], base_dir: Path | None = None, where: str = "evaluators") -> list[NamedEvaluator]:
    """Built evaluators: options validated and files read now, before any model is loaded."""
    check_specs(specs, where)
    built = []
    for i, spec in enumerate(specs):
        options = parse_spec(spec, f"{where}[{i}]")
        built.append(NamedEvaluator(options.name or options.type, EVALUATORS[options.type].build(options, base_dir)))
    return built


def run_evaluators(evaluators: list[NamedEvaluator], subject: Subject) -> dict[str, EvalResult]:
    """Each evaluator's result by name."""
    return {e.name: e(subject) for e in evaluators}
