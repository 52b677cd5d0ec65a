"""Evaluation during training: the configured `evaluators` run every `eval_steps` (and at the last step),
their metrics logged as `eval/<name>/<metric>` to metrics.jsonl and TensorBoard (and so drawn in the
run's plots); with `eval_forgetting`, the general set joins them, and at the last step the base model is
scored too, giving the two forgetting numbers (evaluation/forgetting.py) in `forgetting.json`.

The training loop calls `build` once while preparing (so a bad evaluator file fails before the model is
loaded) and `evaluate(run, step)` after every step; it returns {} when nothing is due.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from strop import manifest
from strop.evaluation import NamedEvaluator, Subject, build_evaluators
from strop.evaluation.forgetting import build_general, compare, describe
from strop.run_types import RunConfig, RunState
from strop.safe_io import write_text

EVALS_FILE, FORGETTING_FILE = "evals.json", "forgetting.json"


@dataclass
class TrainingEvaluation:
    evaluators: list[NamedEvaluator]
    forgetting: bool


class EvaluatedRun(RunState, Protocol):
    """A run with the evaluators `build` made for it (strop.train.loop.Run)."""

    @property
    def evaluators(self) -> TrainingEvaluation | None: ...


def build(cfg: RunConfig, base_dir: Path | None) -> TrainingEvaluation | None:
    """The run's evaluators (files read now), or None when the config has none."""
    specs = getattr(cfg, "evaluators", None) or []
    general = getattr(cfg, "eval_forgetting", None)
    if not specs and general is None:
        return None
    evaluators = build_evaluators(specs, base_dir)
    if general is not None:
        evaluators.append(build_general(general, base_dir))
    return TrainingEvaluation(evaluators, general is not None)


def due(run: EvaluatedRun, step: int) -> bool:
    every = run.cfg.eval_steps
    return run.evaluators is not None and (step == run.total_steps or bool(every and step % every == 0))


def _scores(run: EvaluatedRun, subject: Subject) -> dict:
    from strop.runtime import distributed
    from strop.runtime.precision import autocast, autocast_dtype

    with distributed.gathered_root(run.model), autocast(run.device, autocast_dtype(run.cfg, run.device)):
        return {e.name: e(subject) for e in run.evaluators.evaluators}


def _base_subject(run: RunState) -> tuple[Subject, contextlib.AbstractContextManager]:
    """The base model: the same weights with the adapter switched off, else loaded from its folder."""
    if hasattr(run.model, "disable_adapter"):
        return Subject.of(run.model, run.tokenizer, run.cfg.micro_batch_size, run.cfg.seed), run.model.disable_adapter()
    from strop.models.saved import load_for_chat

    model, _ = load_for_chat(str(run.model_path), run.cfg.trust_remote_code)
    return Subject.of(
        model.to(run.device), run.tokenizer, run.cfg.micro_batch_size, run.cfg.seed
    ), contextlib.nullcontext()


def evaluate(run: EvaluatedRun, step: int) -> dict[str, float]:
    """Metrics of the evaluators due at `step` (written with their samples to evals.json); at the last
    step with eval_forgetting, the forgetting numbers too."""
    from strop.runtime import distributed

    if not due(run, step):
        return {}
    tuned = _scores(run, Subject.of(run.model, run.tokenizer, run.cfg.micro_batch_size, run.cfg.seed))
    metrics = {f"eval/{key}": value for result in tuned.values() for key, value in result.metrics.items()}
    out = Path(run.cfg.output_dir)
    record: dict[str, Any] = {"step": step, "metrics": metrics, "samples": {k: v.samples for k, v in tuned.items()}}
    if run.evaluators.forgetting and step == run.total_steps:
        subject, switched_off = _base_subject(run)
        with switched_off:
            base = _scores(run, subject)
        result = compare(base, tuned) | {
            "samples": {"base": {k: v.samples for k, v in base.items()}, "tuned": record["samples"]}
        }
        metrics |= {
            f"forgetting/{side}_change": result[side]["change"] for side in ("target", "general") if side in result
        }
        if distributed.is_main():
            manifest.claim(out / FORGETTING_FILE)
            write_text(out / FORGETTING_FILE, json.dumps(result, indent=1))
            for line in describe(result):
                (run.tracker.print if run.tracker else print)(f"forgetting: {line}")
    if distributed.is_main():
        manifest.claim(out / EVALS_FILE)
        write_text(out / EVALS_FILE, json.dumps(record, indent=1))
    return metrics
