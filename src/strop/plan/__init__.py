"""`strop plan`: recommend a pipeline (stages, strategy, rank, batch, length, epochs, learning rate) from
the data, the hardware and the goal, and write it as a pipeline.yml that `strop pipeline` runs.

Survey open problem 7 ("automated pipeline selection"). The rules are one table (rules.py); the memory
check is strop estimate's model (estimate.py); the data is read with strop's own format converters.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from strop.errors import StropError
from strop.plan.hardware import Hardware, parse_gpu
from strop.plan.planner import PLANNER_KEYS, Plan, StagePlan, plan_stages, validated
from strop.plan.profile import DataProfile, profile_file
from strop.plan.rules import GOALS, RULES

DEFAULT_MODEL = "smollm2-135m-instruct"

__all__ = [
    "GOALS",
    "RULES",
    "DataProfile",
    "Hardware",
    "Plan",
    "StagePlan",
    "make_plan",
    "parse_gpu",
    "profile_file",
    "write_pipeline",
]


def _tokenizer(base_model: str, notes: list[str]):
    """The model's tokenizer for counting lengths, or None (lengths are then estimated from words)."""
    from strop.models.loading import load_tokenizer, resolve_model_path

    try:
        return load_tokenizer(resolve_model_path(base_model))
    except (StropError, OSError, ValueError) as err:
        notes.append(
            f"lengths estimated from words (1.3 tokens a word): the tokenizer of {base_model} did not "
            f"load ({str(err).splitlines()[0]})"
        )
        return None


def _shapes(base_model: str, partial: dict[str, Any]):
    from strop.train.estimate import shapes_of, skeleton

    cfg = validated({**partial, "base_model": base_model}, "--config")
    return shapes_of(skeleton(cfg))


def read_partial(path: str | None) -> dict[str, Any]:
    """A partial training config whose keys every stage keeps (base_model, lora_target_modules, ...)."""
    if not path:
        return {}
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as err:
        raise StropError(f"--config {path}: cannot read it: {err.strerror or err}") from err
    except yaml.YAMLError as err:
        raise StropError(f"--config {path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise StropError(f"--config {path}: expected a mapping of config keys")
    fixed = sorted(PLANNER_KEYS & set(raw))
    if fixed:
        raise StropError(
            f"--config {path}: {', '.join(fixed)} are for strop plan to decide; remove them "
            "(the data comes from --data)"
        )
    return raw


def make_plan(data: list[str], gpu: str, goal: str, partial: dict[str, Any] | None = None) -> Plan:
    if goal not in GOALS:
        raise StropError(f"--goal must be one of {', '.join(GOALS)}, got {goal!r}")
    partial = dict(partial or {})
    base_model = str(partial.pop("base_model", DEFAULT_MODEL))
    hardware = parse_gpu(gpu)
    notes: list[str] = []
    tokenizer = _tokenizer(base_model, notes)
    profiles = [profile_file(path, tokenizer) for path in data]
    for p in profiles:
        if p.format == "kto":
            notes.append(f"{p.path}: unpaired (KTO) rows are not planned yet; train them with rl: kto")
        elif p.format == "prompt" and not p.reward:
            notes.append(
                f"{p.path}: prompts without a checkable answer (answer, tests or schema on every row): "
                "no GRPO stage (it would need a reward model)"
            )
    if goal == "reasoning" and not any(p.reward for p in profiles):
        notes.append("goal reasoning, but no row has a checkable answer: no GRPO stage")
    stages = plan_stages(profiles, hardware, goal, _shapes(base_model, partial), partial)
    return Plan(base_model, hardware, goal, stages, notes)


def write_pipeline(plan: Plan, out: Path, overwrite: bool = False, export: str | None = "q4_k_m") -> list[Path]:
    """pipeline.yml and one training config per stage beside it (`<stem>.<stage>.yml`), dataset paths
    relative to that folder. Stage configs are written first, the pipeline last, so a failure leaves no
    pipeline pointing at a missing stage."""
    from strop.safe_io import write_text

    folder = out.resolve().parent
    files = {stage.name: out.with_name(f"{out.stem}.{stage.name}.yml") for stage in plan.stages}
    clashes = [str(p) for p in [*files.values(), out] if p.exists()]
    if clashes and not overwrite:
        raise StropError(f"{', '.join(clashes)} already exist; pass --overwrite to replace them")
    for stage in plan.stages:
        config = dict(stage.config)
        config["datasets"] = [
            {**d, "path": os.path.relpath(Path(d["path"]).resolve(), folder)} for d in config["datasets"]
        ]
        header = f"# strop plan: stage {stage.name} ({stage.strategy}), expected peak {stage.estimate.peak / 2**30:.2f} GiB\n"
        write_text(files[stage.name], header + yaml.safe_dump(config, sort_keys=False))
    stages = [{"name": s.name, "kind": "train", "config": files[s.name].name} for s in plan.stages]
    if export:
        stages.append({"name": "export", "kind": "export", "gguf": export})
    spec = {"base_model": plan.base_model, "output_dir": f"outputs/{out.stem}", "stages": stages}
    header = f"# strop plan for {plan.hardware.describe()}, goal {plan.goal}. Run: strop pipeline {out.name}\n"
    write_text(out, header + yaml.safe_dump(spec, sort_keys=False))
    return [*files.values(), out]
