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

Sampling is keyed by global prompt position (rl/rollout.py `row_keys`): the prompt at position p of a
step's global batch draws the same completions whatever the number of processes, so a run's rollouts are
a function of (weights, seed, step) and a checkpoint resumes on any world size with the same draws.

Under torchrun each rank samples, scores and trains on its own prompts' whole groups (a group never
straddles ranks). A rank pads each of its micro-batches to micro_batch_size prompts with filler prompts
(the last micro-batch of an epoch can leave a rank short or empty): every rank then runs the same number
of forwards, which a sharded policy needs, and filler rows carry no loss and count in no normaliser.
Rollout metrics and completions.jsonl are gathered over ranks.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from rich.table import Table

from strop.rl.rewards import build_rewards, score_rewards
from strop.rl.rollout import Completion, SamplingParams, row_keys, sample
from strop.run_types import RunConfig, RunState
from strop.runtime import distributed
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
        self.buffer_step: int | None = None
        self.buffer: list[list[dict]] = []
        self.buffer_groups: list[tuple[int, list[dict]]] = []  # (global prompt position, rows) of real groups
        self.restored: dict | None = None  # a checkpoint's rollouts, until the step that reuses them
        self.generation_s = 0.0  # time spent sampling in this step's rollout
        self.policy: torch.nn.Module | None = None  # what this rollout samples from (see objective.rollout_policy)

    def sample_groups(
        self,
        run: RunState,
        prompt_rows: list[dict],
        n: int,
        seed: int,
        params: SamplingParams | None = None,
        positions: list[int] | None = None,
    ) -> list[dict]:
        """Completions for each prompt row, scored: one dict per prompt with its n completions. The draws
        of the prompt at global position `positions[i]` (default i) depend only on (seed, that position)."""
        positions = list(range(len(prompt_rows))) if positions is None else positions
        keys = row_keys(seed, positions, n, run.device)
        policy = self.policy if self.policy is not None else run.model
        size = self.cfg.generation_batch_size or len(prompt_rows)
        completions: list[Completion] = []
        started = time.perf_counter()
        for start in range(0, len(prompt_rows), size):
            chunk = prompt_rows[start : start + size]
            completions += sample(
                policy,
                run.tokenizer,
                [r["input_ids"] for r in chunk],
                params or self.sampling,
                n,
                keys=keys[start * n : (start + len(chunk)) * n],
            )
        self.generation_s += time.perf_counter() - started
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
                "filler": positions[i] < 0,
            }
            for i, r in enumerate(prompt_rows)
        ]

    def step_prompts(self, run: RunState, micro_batches: list[list[dict]]) -> tuple[list[dict], list[int], list[int]]:
        """The step's prompt rows on this rank, their global positions in the step (-1: filler), and the
        number of prompts of each micro-batch. Global micro-batch i holds positions [i·m·N, (i+1)·m·N) and
        rank r its slice from i·m·N + r·m (m = micro_batch_size, N processes), as the loop shards them."""
        m, sharded = self.cfg.micro_batch_size, distributed.active()
        prompts: list[dict] = []
        positions: list[int] = []
        counts = []
        for i, rows in enumerate(micro_batches):
            first = i * m * distributed.world_size() + distributed.rank() * m
            fill = m - len(rows) if sharded else 0
            prompts += rows + [run.train_rows[0]] * fill
            positions += [first + k for k in range(len(rows))] + [-1] * fill
            counts.append(len(rows) + fill)
        return prompts, positions, counts

    def step_rows(
        self, run: RunState, step: int, micro_batches: list[list[dict]]
    ) -> tuple[list[list[dict]], dict[str, float]]:
        """The rollouts the step trains on, grouped as the prompts were, and the rollout metrics. Rollouts
        are sampled on the first of each `num_iterations` steps (and after a resume) and reused after."""
        data_step = step // self.cfg.num_iterations
        if self.restored is not None and self.restored["data_step"] == data_step:
            self.buffer_step, self.buffer = data_step, self.restored_rows(run, micro_batches, self.restored)
        self.restored = None
        if self.buffer_step == data_step:
            return self.buffer, {}
        started, self.generation_s = time.perf_counter(), 0.0
        prompt_rows, positions, groups_per_micro = self.step_prompts(run, micro_batches)
        seed = self.cfg.seed * 1_000_003 + data_step
        self.policy = self.objective.rollout_policy(run)
        groups = self.sample_groups(run, prompt_rows, self.cfg.num_generations, seed, positions=positions)
        metrics = rollout_metrics(gathered(groups, positions))
        groups, selection = self.objective.select_groups(self, run, groups, seed)
        rows = self.objective.score_rows(run, groups)
        metrics |= selection | self.objective.rollout_stats()
        # this process's wall time: sampling alone, and the whole rollout (rewards, old and reference log-probs)
        metrics |= {"generation_s": self.generation_s, "rollout_s": time.perf_counter() - started}
        n = self.cfg.num_generations
        out, start = [], 0
        for count in groups_per_micro:
            out.append(rows[start * n : (start + count) * n])
            start += count
        self.buffer_step, self.buffer = data_step, out
        real = [i for i, g in enumerate(groups) if not g["filler"]]  # after selection: the i-th real slot
        real_positions = [p for p in positions if p >= 0]  # holds the i-th real position
        self.buffer_groups = [(p, rows[i * n : (i + 1) * n]) for p, i in zip(real_positions, real)]
        self.log_completions(run, step, [groups[i] for i in real], real_positions)
        return out, metrics

    def state(self, step: int) -> dict | None:
        """The rollouts step `step` will reuse (a checkpoint between the num_iterations steps of one
        batch), over every rank and keyed by global prompt position, so that they resume on any number
        of processes; None at a batch boundary, where the step samples afresh."""
        if self.buffer_step is None or self.buffer_step != step // self.cfg.num_iterations:
            return None
        groups = sorted(
            (pair for part in distributed.gather_json(self.buffer_groups) for pair in part), key=lambda x: x[0]
        )
        return {"data_step": self.buffer_step, "groups": groups}

    def restore(self, saved: dict) -> None:
        self.restored = saved

    def restored_rows(self, run: RunState, micro_batches: list[list[dict]], restored: dict) -> list[list[dict]]:
        """A checkpoint's rollouts laid out over this rank's micro-batches as `step_rows` lays out
        fresh ones: each position's group, filler slots as weightless copies of a saved group."""
        saved = dict(restored["groups"])
        filler = [{**row, "weight": 0.0, "counted": 0.0} for row in restored["groups"][0][1]]
        _, positions, counts = self.step_prompts(run, micro_batches)
        flat = [row for p in positions for row in (saved[p] if p >= 0 else filler)]
        n, out, start = self.cfg.num_generations, [], 0
        for count in counts:
            out.append(flat[start * n : (start + count) * n])
            start += count
        return out

    def log_completions(self, run: RunState, step: int, groups: list[dict], positions: list[int]) -> None:
        """Every rollout goes to completions.jsonl (rank 0 writes every rank's, in global prompt order);
        every log_completions_steps steps a few are printed."""
        records = [
            [
                {
                    "step": step,
                    "prompt": g["prompt_row"]["prompt"][-1]["content"],
                    "completion": c.text,
                    "tokens": len(c.ids),
                    "finished": c.finished,
                    "reward": g["rewards"][i],
                    **{k: v[i] for k, v in g["per_reward"].items()},
                }
                for i, c in enumerate(g["completions"])
            ]
            for g in groups
        ]
        ordered = sorted(
            (pair for part in distributed.gather_json(list(zip(positions, records))) for pair in part),
            key=lambda pair: pair[0],
        )
        if distributed.is_main():
            path = Path(self.cfg.output_dir) / "completions.jsonl"
            with disk_errors(path), path.open("a") as out:
                out.writelines(json.dumps(record) + "\n" for _, group in ordered for record in group)
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
        """Mean reward of greedy completions of the validation prompts (accuracy, for a 0/1 reward).
        Under torchrun each rank answers its share (padded with fillers to equal counts)."""
        greedy = SamplingParams(self.cfg.max_completion_length, 0.0, stop_strings=tuple(self.cfg.stop_strings))
        share = -(-len(run.val_rows) // distributed.world_size())
        first = distributed.rank() * share
        mine = run.val_rows[first : first + share]
        positions = [first + k for k in range(len(mine))] + [-1] * (share - len(mine))
        self.policy = self.objective.rollout_policy(run)
        groups = self.sample_groups(
            run, mine + run.val_rows[:1] * (share - len(mine)), 1, self.cfg.seed, greedy, positions
        )
        real = [g for g in groups if not g["filler"]]
        sums = {"count": float(len(real)), "eval_reward": sum(r for g in real for r in g["rewards"])}
        for name in groups[0]["per_reward"]:
            sums[f"eval_reward/{name}"] = sum(v for g in real for v in g["per_reward"][name])
        sums = distributed.sum_over_ranks(sums)
        count = sums.pop("count")
        return {k: v / count if count else 0.0 for k, v in sums.items()}


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def std(values: list[float]) -> float:
    m = mean(values)
    return math.sqrt(mean([(v - m) ** 2 for v in values]))


def gathered(groups: list[dict], positions: list[int]) -> list[dict]:
    """What the rollout metrics read of every rank's real groups, in global prompt order."""
    mine = [
        (
            p,
            {
                "rewards": g["rewards"],
                "per_reward": g["per_reward"],
                "lengths": [len(c.ids) for c in g["completions"]],
                "finished": [c.finished for c in g["completions"]],
            },
        )
        for p, g in zip(positions, groups)
        if p >= 0
    ]
    return [g for _, g in sorted((pair for part in distributed.gather_json(mine) for pair in part), key=lambda x: x[0])]


def rollout_metrics(groups: list[dict]) -> dict[str, float]:
    """Reward mean/std overall and per reward function, constant-reward groups, lengths, truncation."""
    rewards = [r for g in groups for r in g["rewards"]]
    metrics = {
        "reward": mean(rewards),
        "reward_std": std(rewards),
        "zero_variance_groups": mean([float(max(g["rewards"]) == min(g["rewards"])) for g in groups]),
        "completion_length": mean([n for g in groups for n in g["lengths"]]),
        "truncated": mean([float(not f) for g in groups for f in g["finished"]]),
    }
    for name in groups[0]["per_reward"]:
        values = [v for g in groups for v in g["per_reward"][name]]
        metrics[f"reward/{name}"], metrics[f"reward/{name}_std"] = mean(values), std(values)
    return metrics
