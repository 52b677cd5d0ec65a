"""`win_rate`: how often the model's reply beats a baseline reply to the same prompt, by a judge.

A pairwise judge is any object with `compare(prompt, first, second) -> P(first is better)` in [0, 1]
(the protocol shared with strop's LLM judge). Judges are position-biased (Zheng et al., 2023, "Judging
LLM-as-a-Judge", §3.3 finds LLM judges favour the first answer), so each pair is judged in both orders
and the two verdicts are averaged:

    p = (compare(x, model, baseline) + 1 − compare(x, baseline, model)) / 2

a pair is a win when p > 1/2, a tie at exactly 1/2 (worth half a win), a loss otherwise; the win rate is
(wins + ties/2) / pairs. A judge that always prefers whichever reply comes first scores every pair a tie
(0.5): its verdicts carry no information and the two orders cancel.

The baseline replies come from a field of each row (`baseline_field`) or from a baseline model
(`baseline_model`, generated with the same decoding). The built-in judge is a trained reward model
(`reward_model`): with scores s, P(first better) = σ(s_first − s_second), the Bradley–Terry model the
reward model was trained under (objectives/reward.py).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol

from pydantic import Field, model_validator

from strop.errors import StropError
from strop.evaluation.base import (
    EvalResult,
    EvaluatorType,
    Messages,
    Options,
    Subject,
    data_rows,
    last_user_text,
    local_path,
    read_prompt,
)


class PairwiseJudge(Protocol):
    def compare(self, prompt: str, first: str, second: str) -> float:
        """P(first is better than second) in [0, 1]."""


class RewardModelJudge:
    """A reward model as a pairwise judge: σ(score(first) − score(second))."""

    def __init__(self, scorer):
        self.scorer = scorer

    def compare(self, prompt: str, first: str, second: str) -> float:
        first_score, second_score = self.scorer.score([prompt, prompt], [first, second])
        return 1.0 / (1.0 + math.exp(second_score - first_score))


class WinRateOptions(Options):
    baseline_field: str | None = Field(None, description="Row field holding the baseline reply.")
    baseline_model: str | None = Field(None, description="Model folder whose replies are the baseline.")
    reward_model: str | None = Field(None, description="Reward model folder that judges the pairs.")
    judge_model: str | None = Field(
        None,
        description="LLM judge instead of a reward model: a model strop loads "
        "(alias, folder, adapter) or an OpenAI-compatible http(s):// endpoint.",
    )
    judge_rubric: str | None = Field(None, description="Text file with the LLM judge's rubric or constitution.")
    max_new_tokens: int = Field(128, gt=0, description="Tokens generated per reply.")

    @model_validator(mode="after")
    def _one_baseline(self) -> WinRateOptions:
        if (self.baseline_field is None) == (self.baseline_model is None):
            raise ValueError("give exactly one of baseline_field and baseline_model")
        if (self.reward_model is None) == (self.judge_model is None):
            raise ValueError("give exactly one judge: reward_model or judge_model")
        return self


def judge_both_orders(judge: PairwiseJudge, prompt: str, reply: str, baseline: str) -> float:
    """P(reply beats baseline), averaged over both presentation orders."""
    return (judge.compare(prompt, reply, baseline) + 1.0 - judge.compare(prompt, baseline, reply)) / 2


def win_rate(
    judge: PairwiseJudge, prompts: list[str], replies: list[str], baselines: list[str]
) -> tuple[dict[str, float], list[float]]:
    """Win rate (ties count half), win/tie/loss shares and each pair's probability."""
    probabilities = [judge_both_orders(judge, p, r, b) for p, r, b in zip(prompts, replies, baselines)]
    n = len(probabilities)
    wins, ties = sum(p > 0.5 for p in probabilities), sum(p == 0.5 for p in probabilities)
    metrics = {"win_rate": (wins + ties / 2) / n, "wins": wins / n, "ties": ties / n, "losses": (n - wins - ties) / n}
    return metrics, probabilities


def default_judge(options: WinRateOptions, base_dir: Path | None) -> PairwiseJudge:
    """The options' judge: an LLM (`judge_model`, a model strop loads or an http(s):// endpoint) or a
    reward model (`reward_model`); the options' validator asks for exactly one."""
    if options.judge_model is not None:
        from strop.judge import LLMJudge, make_backend, read_rubric

        target = options.judge_model
        if not target.startswith(("http://", "https://")):
            target = local_path(target, base_dir)
        rubric = read_rubric(local_path(options.judge_rubric, base_dir) if options.judge_rubric else None)
        return LLMJudge(make_backend(target), rubric, both_orders=False)  # win_rate asks both orders itself
    if options.reward_model is None:
        raise StropError("win-rate evaluator: give reward_model or judge_model")
    from strop.rl.reward_scorer import RewardScorer

    return RewardModelJudge(RewardScorer(local_path(options.reward_model, base_dir)))


def build(options: WinRateOptions, base_dir: Path | None, judge: PairwiseJudge | None = None):
    rows = data_rows(options, base_dir)
    prompts: list[Messages] = [read_prompt(row, where) for where, row in rows]
    baselines: list[str] | None = None
    if options.baseline_field:
        baselines = []
        for where, row in rows:
            value = row.get(options.baseline_field)
            if not isinstance(value, str):
                raise StropError(f"{where}: field '{options.baseline_field}' (the baseline reply) must be a string")
            baselines.append(value)
    if judge is None:
        judge = default_judge(options, base_dir)

    def evaluate(subject: Subject) -> EvalResult:
        replies = [r[0] for r in subject.generate(prompts, 1, 0.0, options.max_new_tokens)]
        if baselines is not None:
            against = baselines
        elif options.baseline_model is None:  # the options' validator asks for one of the two
            raise StropError("win-rate evaluator: give baseline_field or baseline_model")
        else:
            against = _baseline_replies(local_path(options.baseline_model, base_dir), options, prompts)
        texts = [last_user_text(p) for p in prompts]
        metrics, probabilities = win_rate(judge, texts, replies, against)
        samples = [
            {"prompt": t, "reply": r, "baseline": b, "p_win": round(p, 3)}
            for t, r, b, p in list(zip(texts, replies, against, probabilities))[: options.samples]
        ]
        return EvalResult(metrics, samples)

    return evaluate


def _baseline_replies(folder: str, options: WinRateOptions, prompts: list[Messages]) -> list[str]:
    from strop.evaluation.base import ModelGenerator
    from strop.models.saved import load_for_chat

    model, tokenizer = load_for_chat(folder)
    return [r[0] for r in ModelGenerator(model, tokenizer)(prompts, 1, 0.0, options.max_new_tokens)]


EVALUATOR = EvaluatorType(WinRateOptions, build)
