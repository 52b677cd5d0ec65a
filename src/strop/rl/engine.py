"""RL orchestration: the rollout engine that feeds an RL objective's steps.

RL is the training loop with one more stage. Before the first of every `num_iterations` optimizer steps
the loop asks its row source for the step's rows; for an RL objective that source is this engine, which
takes the prompts of the step, samples `num_generations` completions per prompt from the live policy
(rl/rollout.py), scores them with the configured rewards (rl/rewards/), and hands the groups to the
objective, which turns them into scored rollout rows (advantages, old log-probs). The loss then runs on
those micro-batches as on any other data, so accumulation, clipping, checkpoints, logging and every
update strategy work unchanged. The same rollouts serve all `num_iterations` steps.

The engine also writes every rollout to completions.jsonl, prints a few every `log_completions_steps`,
and evaluates a run by the mean reward of greedy completions of the validation prompts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from rich.table import Table

from strop.rl.rewards import build_rewards, score_rewards
from strop.rl.rollout import Completion, SamplingParams, sample
from strop.run_types import RunConfig, RunState
from strop.safe_io import disk_errors


class RolloutEngine:
    """The row source of RL objectives: sampled, scored rollouts, buffered for `num_iterations` steps.
    The objective answers the questions only it can: extra reward (`reward_shaping`), which groups to
    keep (`select_groups`), and how scored groups become rows (`score_rows`)."""

    rows_from_model = True

    def __init__(self, cfg: RunConfig, objective: Any, base_dir: Path | None):
        """Built with the data, before the model: a reward that cannot be built fails before any output."""
        self.cfg, self.objective = cfg, objective
        self.rewards = build_rewards(cfg.rewards, base_dir)
        self.sampling = SamplingParams(
            cfg.max_completion_length, cfg.temperature, cfg.top_p, cfg.top_k, tuple(cfg.stop_strings)
        )
        self.generator: torch.Generator | None = None
        self.buffer_step: int | None = None
        self.buffer: list[list[dict]] = []

    def sample_groups(
        self, run: RunState, prompt_rows: list[dict], n: int, seed: int, params: SamplingParams | None = None
    ) -> list[dict]:
        """Completions for each prompt row, scored: one dict per prompt with its n completions."""
        if self.generator is None:
            self.generator = torch.Generator(device=run.device)
        self.generator.manual_seed(seed)
        size = self.cfg.generation_batch_size or len(prompt_rows)
        completions: list[Completion] = []
        for start in range(0, len(prompt_rows), size):
            chunk = prompt_rows[start : start + size]
            completions += sample(
                run.model, run.tokenizer, [r["input_ids"] for r in chunk], params or self.sampling, n, self.generator
            )
        prompts = [r["prompt"] for r in prompt_rows for _ in range(n)]
        rows = [r["row"] for r in prompt_rows for _ in range(n)]
        where = [r["where"] for r in prompt_rows for _ in range(n)]
        total, per_reward = score_rewards(self.rewards, prompts, [c.text for c in completions], rows, where)
        total = [t + s for t, s in zip(total, self.objective.reward_shaping(completions, per_reward))]
        return [
            {
                "prompt_row": r,
                "completions": completions[i * n : (i + 1) * n],
                "rewards": total[i * n : (i + 1) * n],
                "per_reward": {k: v[i * n : (i + 1) * n] for k, v in per_reward.items()},
            }
            for i, r in enumerate(prompt_rows)
        ]

    def step_rows(
        self, run: RunState, step: int, micro_batches: list[list[dict]]
    ) -> tuple[list[list[dict]], dict[str, float]]:
        """The rollouts the step trains on, grouped as the prompts were, and the rollout metrics. Rollouts
        are sampled on the first of each `num_iterations` steps (and after a resume) and reused after."""
        data_step = step // self.cfg.num_iterations
        if self.buffer_step == data_step:
            return self.buffer, {}
        groups_per_micro = [len(rows) for rows in micro_batches]
        prompt_rows = [row for rows in micro_batches for row in rows]
        seed = self.cfg.seed * 1_000_003 + data_step
        groups = self.sample_groups(run, prompt_rows, self.cfg.num_generations, seed)
        metrics = rollout_metrics(groups)
        groups, selection = self.objective.select_groups(self, run, groups, seed)
        rows = self.objective.score_rows(run, groups)
        metrics |= selection | self.objective.rollout_stats()
        n = self.cfg.num_generations
        out, start = [], 0
        for count in groups_per_micro:
            out.append(rows[start * n : (start + count) * n])
            start += count
        self.buffer_step, self.buffer = data_step, out
        self.log_completions(run, step, groups)
        return out, metrics

    def log_completions(self, run: RunState, step: int, groups: list[dict]) -> None:
        """Every rollout goes to completions.jsonl; every log_completions_steps steps a few are printed."""
        path = Path(self.cfg.output_dir) / "completions.jsonl"
        with disk_errors(path), path.open("a") as out:
            for g in groups:
                for i, c in enumerate(g["completions"]):
                    out.write(
                        json.dumps(
                            {
                                "step": step,
                                "prompt": g["prompt_row"]["prompt"][-1]["content"],
                                "completion": c.text,
                                "tokens": len(c.ids),
                                "finished": c.finished,
                                "reward": g["rewards"][i],
                                **{k: v[i] for k, v in g["per_reward"].items()},
                            }
                        )
                        + "\n"
                    )
        tracker = getattr(run, "tracker", None)
        if tracker is None or step % self.cfg.log_completions_steps:
            return
        table = Table(title=f"step {step}: sampled completions", show_lines=True)
        for column in ("prompt", "completion", "reward"):
            table.add_column(column, ratio=3 if column == "completion" else 2 if column == "prompt" else 1)
        for g in groups[:2]:
            for i, c in enumerate(g["completions"][:2]):
                table.add_row(g["prompt_row"]["prompt"][-1]["content"][:200], c.text[:300], f"{g['rewards'][i]:.3g}")
        tracker.print(table)

    def evaluate(self, run: RunState) -> dict[str, float]:
        """Mean reward of greedy completions of the validation prompts (accuracy, for a 0/1 reward)."""
        greedy = SamplingParams(self.cfg.max_completion_length, 0.0, stop_strings=tuple(self.cfg.stop_strings))
        groups = self.sample_groups(run, run.val_rows, 1, self.cfg.seed, greedy)
        metrics = {"eval_reward": mean([r for g in groups for r in g["rewards"]])}
        for name in groups[0]["per_reward"]:
            metrics[f"eval_reward/{name}"] = mean([v for g in groups for v in g["per_reward"][name]])
        return metrics


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def std(values: list[float]) -> float:
    m = mean(values)
    return math.sqrt(mean([(v - m) ** 2 for v in values]))


def rollout_metrics(groups: list[dict]) -> dict[str, float]:
    """Reward mean/std overall and per reward function, constant-reward groups, lengths, truncation."""
    rewards = [r for g in groups for r in g["rewards"]]
    completions = [c for g in groups for c in g["completions"]]
    metrics = {
        "reward": mean(rewards),
        "reward_std": std(rewards),
        "zero_variance_groups": mean([float(max(g["rewards"]) == min(g["rewards"])) for g in groups]),
        "completion_length": mean([len(c.ids) for c in completions]),
        "truncated": mean([float(not c.finished) for c in completions]),
    }
    for name in groups[0]["per_reward"]:
        values = [v for g in groups for v in g["per_reward"][name]]
        metrics[f"reward/{name}"], metrics[f"reward/{name}_std"] = mean(values), std(values)
    return metrics
