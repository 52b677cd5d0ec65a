"""The rules `strop plan` follows, in one table, each with the guidance it comes from.

A rule is (topic, when, then, because): for each topic the first rule whose `when` holds on the facts
decides, and its `because` is printed with the plan. Sources: "survey" is /work/shared/survey's
fine-tuning survey (section named), "review" its literature review; "strop" marks a choice of strop's
own where the survey gives no number, said as such.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

GOALS = ("chat", "reasoning", "domain")
#: What a rule's `because` starts with: where the guidance comes from.
SOURCES = ("survey", "strop", "DPO paper", "DPO and GRPO papers", "DeepSeekMath")


@dataclass(frozen=True)
class Facts:
    """What the rules look at: the data, the hardware and the goal, for one stage (`stage` is set
    while choosing a stage's settings, empty while choosing the stages)."""

    goal: str
    sft_rows: int
    pair_rows: int
    verifiable_rows: int
    cpu: bool
    stage: str = ""
    rows: int = 0  # rows of this stage's data


@dataclass(frozen=True)
class Rule:
    topic: str
    when: Callable[[Facts], bool]
    then: Any
    because: str


RULES: tuple[Rule, ...] = (
    # which stages, in order
    Rule(
        "sft",
        lambda f: f.sft_rows > 0,
        "sft",
        "survey, Practical pipeline step 2: SFT teaches the domain from demonstrations (1,000–5,000 expert "
        "examples; 500–2,000 typically suffice, LIMA: 1,000)",
    ),
    Rule(
        "preference",
        lambda f: f.pair_rows > 0 and f.sft_rows > 0,
        "dpo",
        "survey, step 3: ORPO or DPO on 200–1,000 preference pairs after SFT; DPO needs no reward model",
    ),
    Rule(
        "preference",
        lambda f: f.pair_rows > 0,
        "orpo",
        "survey, ORPO: SFT and preference in one stage, so pairs alone need no separate SFT stage",
    ),
    Rule(
        "rl",
        lambda f: f.verifiable_rows > 0,
        "grpo",
        "survey, step 4 and RLVR: GRPO on prompts whose answers a program checks (math, code tests, "
        "schemas); verifiable rewards have no reward-model error",
    ),
    # strategy: the candidates in order of preference; the first that fits memory wins
    Rule(
        "strategies",
        lambda f: f.cpu,
        ("lora",),
        "strop: QLoRA's NF4 kernels need CUDA (bitsandbytes); on a CPU the smallest setting is LoRA",
    ),
    Rule(
        "strategies",
        lambda f: f.rows >= 50_000,
        ("full", "galore", "dora", "lora", "qlora"),
        "survey, Resource requirements table: quality retention full 100%, GaLore ~99%, DoRA ~98%, "
        "LoRA ~97%, QLoRA ~95%; with much data take the most expressive method that fits",
    ),
    Rule(
        "strategies",
        lambda f: True,
        ("lora", "qlora"),
        "survey, LoRA/QLoRA: ~0.1% trainable keeps ~97% (QLoRA ~95%) of full quality, and small data "
        "(500–5,000 rows) overfits a full update; QLoRA when LoRA does not fit",
    ),
    # LoRA rank
    Rule("rank", lambda f: f.cpu, 8, "strop: the smallest setting on a CPU"),
    Rule("rank", lambda f: f.stage in ("dpo", "orpo"), 8, "survey, step 3: LoRA r = 8 for alignment"),
    Rule("rank", lambda f: True, 16, "survey, steps 2 and 4: r = 16 for SFT and GRPO (alpha = 2r, survey config)"),
    # peak learning rate: (with an adapter, full update)
    Rule(
        "learning_rate",
        lambda f: f.stage == "sft",
        (2e-4, 1e-5),
        "survey config: 2e-4 for LoRA SFT; full SFT at 1e-5 as LIMA (cited by the survey) trained",
    ),
    Rule(
        "learning_rate",
        lambda f: f.stage in ("dpo", "orpo"),
        (5e-5, 1e-6),
        "DPO paper (survey ref. 3) trained full models at 1e-6; strop: adapters take a larger step",
    ),
    Rule(
        "learning_rate",
        lambda f: True,
        (1e-5, 1e-6),
        "DeepSeekMath's GRPO ran at 1e-6 full; strop: adapters 1e-5 (RL updates are small, a large "
        "step collapses the policy)",
    ),
    # passes over the data
    Rule("epochs", lambda f: f.stage != "sft", 1, "DPO and GRPO papers: one pass over pairs / prompts"),
    Rule("epochs", lambda f: f.rows < 1_000, 3, "survey config: num_epochs 3 for a few thousand examples"),
    Rule("epochs", lambda f: f.rows < 10_000, 2, "strop: more data needs fewer passes than the survey's 3"),
    Rule("epochs", lambda f: True, 1, "strop: one pass over large data (repeats overfit and forget)"),
    # effective batch (rows per optimizer step)
    Rule("batch", lambda f: f.rows < 200, 8, "strop: a smaller step on little data keeps ≥ 25 updates"),
    Rule("batch", lambda f: True, 16, "survey config: micro_batch 2 × gradient accumulation 8 = 16"),
    # sequence length: which share of the rows must fit whole
    Rule(
        "length_share",
        lambda f: True,
        0.95,
        "strop: sequence_len covers 95% of rows (p95); the longest 5% are dropped rather than every "
        "batch sized for the outliers",
    ),
    Rule(
        "max_length",
        lambda f: True,
        4096,
        "survey config: sequence_len 4096 (longer documents are split into chunks, longer rows dropped)",
    ),
    # keys every stage has, and each objective's own
    Rule(
        "fixed",
        lambda f: True,
        {"lora_target_modules": "all-linear", "warmup_ratio": 0.03, "lr_scheduler": "cosine"},
        "survey config: warmup_ratio 0.03, cosine decay, lora_alpha = 2r; strop: every linear layer adapted "
        "(QLoRA paper: all linear layers are needed to match full fine-tuning)",
    ),
    Rule("objective_keys", lambda f: f.stage == "dpo", {"rl": "dpo", "rl_beta": 0.1}, "DPO paper: β = 0.1"),
    Rule(
        "objective_keys",
        lambda f: f.stage == "orpo",
        {"rl": "orpo", "orpo_alpha": 0.1},
        "survey config: orpo_alpha 0.1",
    ),
    Rule("objective_keys", lambda f: f.stage == "grpo", {"rl": "grpo"}, "survey, step 4: GRPO"),
    Rule("objective_keys", lambda f: True, {}, "strop: SFT is the default objective"),
    # NEFTune
    Rule(
        "neftune",
        lambda f: f.stage == "sft" and f.goal in ("chat", "domain"),
        5.0,
        "survey config and conclusion: SFT with NEFTune (noise alpha 5) for instruction following",
    ),
    Rule("neftune", lambda f: True, None, "strop: no NEFTune when the goal is not instruction following"),
    # RL sampling
    Rule(
        "generations",
        lambda f: f.goal == "reasoning",
        (8, 512),
        "survey, GRPO: a group of G completions per prompt; reasoning needs long ones (8 of 512 tokens)",
    ),
    Rule("generations", lambda f: True, (4, 256), "strop: a smaller group and budget when reasoning is not the goal"),
)


def decide(topic: str, facts: Facts) -> Rule | None:
    """The first rule of `topic` whose condition holds, or None."""
    return next((rule for rule in RULES if rule.topic == topic and rule.when(facts)), None)
