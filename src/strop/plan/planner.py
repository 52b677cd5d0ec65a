"""`strop plan`'s engine: data profiles + hardware + goal → stages with settings that fit memory.

Every decision comes from the rule table (strop/plan/rules.py); this module only applies it: it picks
the stages, and for each stage walks the rule's strategy candidates, with and without gradient
checkpointing and from the largest micro-batch down, through strop estimate's memory model until one
fits the device's budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from strop.errors import StropError
from strop.plan.hardware import Hardware
from strop.plan.profile import DataProfile
from strop.plan.rules import Facts, decide
from strop.train.estimate import GIB, Estimate, Shapes, estimate

SFT_FORMATS = ("alpaca", "chat", "completion", "text")
#: Measured `strop train` tokens/s on one GPU (README, "GPU speed": H200, sequence 2048, bf16):
#: (gpu, strategy) → [(model parameters, tokens/s)]. A stage gets a time only when its model is within
#: 2× of a measured size; tokens/s is scaled by the parameter ratio (compute per token ∝ parameters).
THROUGHPUT: dict[tuple[str, str], list[tuple[float, float]]] = {
    ("h200", "lora"): [(8.03e9, 10_830), (1.24e9, 57_731)],
    ("h200", "qlora"): [(8.03e9, 6_632)],
    ("h200", "full"): [(1.24e9, 52_431)],
}
PLANNER_KEYS = {"datasets", "rl", "output_dir"}  # what a partial config may not fix: the plan decides


@dataclass
class StagePlan:
    name: str
    data: list[DataProfile]
    config: dict[str, Any]
    estimate: Estimate
    reasons: list[str]
    seconds: float | None = None

    @property
    def strategy(self) -> str:
        return self.estimate.strategy


@dataclass
class Plan:
    base_model: str
    hardware: Hardware
    goal: str
    stages: list[StagePlan]
    notes: list[str] = field(default_factory=list)


def _round_up(value: int, step: int = 64) -> int:
    return max(step, math.ceil(value / step) * step)


def _precision(hardware: Hardware) -> dict[str, Any]:
    if hardware.cpu:
        return {"bf16": False}
    return {"bf16": "auto"} if hardware.bf16 else {"bf16": False, "fp16": True}


SETTING_TOPICS = (
    "fixed",
    "objective_keys",
    "strategies",
    "rank",
    "learning_rate",
    "epochs",
    "batch",
    "length_share",
    "max_length",
    "neftune",
    "generations",
)


def _stage_settings(
    stage: str, data: list[DataProfile], facts: Facts, hardware: Hardware
) -> tuple[dict, list[str], tuple]:
    """The stage's config keys that do not depend on memory, the reasons, and the strategy candidates."""
    rules = {topic: decide(topic, facts) for topic in SETTING_TOPICS}
    longest = max(profile.percentile(rules["length_share"].then) for profile in data)
    length = min(rules["max_length"].then, longest)
    rank = rules["rank"].then
    config: dict[str, Any] = {
        **rules["fixed"].then,
        **rules["objective_keys"].then,
        "lora_r": rank,
        "lora_alpha": 2 * rank,
        "num_epochs": rules["epochs"].then,
        "logging_steps": 5,
        **_precision(hardware),
    }
    if stage == "sft" and rules["neftune"].then:
        config["neftune_noise_alpha"] = rules["neftune"].then
    if stage == "grpo":
        generations, completion = rules["generations"].then
        reward = data[0].reward
        if reward is None:
            raise StropError("plan: a grpo stage needs data with a verifiable reward")
        config.update(
            num_generations=generations,
            max_completion_length=completion,
            rewards=[{"type": reward[0], "field": reward[1]}],
        )
    config["sequence_len"] = _round_up(length + config.get("max_completion_length", 0))
    used = [t for t in SETTING_TOPICS if t not in ("max_length", "neftune", "generations")]
    used += ["max_length"] * (longest > length) + ["neftune"] * (stage == "sft") + ["generations"] * (stage == "grpo")
    reasons = [f"{topic}: {rules[topic].because}" for topic in used]
    return config, reasons, (rules["strategies"].then, rules["batch"].then, rules["learning_rate"].then)


def validated(raw: dict[str, Any], source: str):
    """A training Config from planned keys; a bad key (from the partial config) is the user's error."""
    from pydantic import ValidationError

    from strop.config import _format_validation_error, config_class

    try:
        return config_class().model_validate({"datasets": [{"path": "plan.jsonl", "type": "alpaca"}], **raw})
    except ValidationError as err:
        raise StropError(_format_validation_error(err, source)) from err


def fit(
    stage: str,
    config: dict[str, Any],
    candidates: tuple[str, ...],
    batch: int,
    shapes: Shapes,
    hardware: Hardware,
    partial: dict[str, Any],
) -> tuple[dict[str, Any], Estimate]:
    """The first candidate strategy (then checkpointing, then the largest micro-batch) that fits."""
    # rows in one forward pass per micro-batch row: a pair is two sequences, a GRPO prompt G completions
    per_row = 2 if stage in ("dpo", "orpo") else config.get("num_generations", 1)
    if "adapter" in partial:
        candidates = (validated(partial, "--config").strategy,)
    smallest = None
    for strategy in candidates:
        for checkpointing in (False, True):
            for micro in (m for m in (16, 8, 4, 2, 1) if m <= batch and batch % m == 0):
                trial = {
                    **config,
                    "adapter": strategy,
                    "micro_batch_size": micro,
                    "gradient_accumulation_steps": batch // micro,
                    "gradient_checkpointing": checkpointing,
                    **partial,
                }
                cfg = validated({**trial, "micro_batch_size": trial["micro_batch_size"] * per_row}, f"stage {stage}")
                result = estimate(strategy, cfg, shapes, hardware.bf16)
                if result.peak / GIB <= hardware.budget_gib:
                    return trial, result
                smallest = min(smallest or result, result, key=lambda e: e.peak)
    raise StropError(
        f"stage {stage}: nothing fits {hardware.describe()}: the smallest setting tried "
        f"({smallest.strategy}, micro-batch 1, gradient checkpointing) needs {smallest.peak / GIB:.1f} GiB "
        f"of the {hardware.budget_gib:.1f} GiB a run may use; choose a smaller base_model or a larger GPU"
    )


def stage_seconds(stage: StagePlan, hardware: Hardware, params: int) -> float | None:
    """Expected training time from a measured throughput, or None where strop has no figure near it."""
    if stage.name == "grpo" or hardware.cpu:
        return None  # RL time is generation-bound; CPU figures are not measured
    for measured_params, tokens_per_s in THROUGHPUT.get((hardware.name, stage.strategy), []):
        if 0.5 <= params / measured_params <= 2:
            tokens = sum(p.rows * p.mean_length for p in stage.data) * stage.config["num_epochs"]
            tokens *= 2 if stage.name in ("dpo", "orpo") else 1
            return tokens / (tokens_per_s * measured_params / params * hardware.count)
    return None


def plan_stages(
    profiles: list[DataProfile], hardware: Hardware, goal: str, shapes: Shapes, partial: dict[str, Any]
) -> list[StagePlan]:
    """Stages in the survey's order (SFT → preference → GRPO), each with settings that fit."""
    by_stage = {
        "sft": [p for p in profiles if p.format in SFT_FORMATS],
        "preference": [p for p in profiles if p.pairs],
        "rl": [p for p in profiles if p.reward],
    }
    rows = {key: sum(p.rows for p in value) for key, value in by_stage.items()}
    facts = Facts(goal, rows["sft"], rows["preference"], rows["rl"], hardware.cpu)
    stages = []
    for topic in ("sft", "preference", "rl"):
        chosen = decide(topic, facts)
        if chosen is None:
            continue
        stage_facts = Facts(**{**facts.__dict__, "stage": chosen.then, "rows": rows[topic]})
        config, reasons, (candidates, batch, rates) = _stage_settings(
            chosen.then, by_stage[topic], stage_facts, hardware
        )
        config["datasets"] = [{"path": str(p.path), "type": _dataset_type(chosen.then, p)} for p in by_stage[topic]]
        trial, result = fit(chosen.then, config, candidates, batch, shapes, hardware, partial)
        trial.setdefault("learning_rate", rates[1] if result.strategy in ("full", "galore") else rates[0])
        stages.append(StagePlan(chosen.then, by_stage[topic], trial, result, [f"stage: {chosen.because}", *reasons]))
    if not stages:
        raise StropError(
            "the data holds nothing strop plan can train on: no SFT rows, no preference pairs and no "
            "prompts with checkable answers (answer, tests or schema fields)"
        )
    for stage in stages:
        stage.seconds = stage_seconds(stage, hardware, shapes.total)
    return stages


def _dataset_type(stage: str, profile: DataProfile) -> str:
    if stage == "orpo":
        return "orpo"
    if stage == "grpo" and profile.format not in ("alpaca",):
        return "prompt"
    return profile.format
