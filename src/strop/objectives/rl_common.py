"""What the RL objectives (GRPO and its DAPO / Dr. GRPO options, PPO) share: prompt data, the rollout
stage, rewards, the reference policy, metrics and held-out evaluation.

RL is the training loop with one more stage. Before the first of every `num_iterations` optimizer steps
the loop hands the objective the prompts of the step (`step_rows`); the objective samples
`num_generations` completions per prompt from the live policy (rl/rollout.py), scores them with the
configured rewards (rl/rewards/), and returns the scored rollouts as the step's micro-batches. The loss
then runs on those micro-batches as on any other data, so accumulation, clipping, checkpoints, logging
and every update strategy work unchanged. The same rollouts serve all `num_iterations` steps; the
log-probs of the policy that sampled them are kept for the importance ratio.

The reference policy (for the KL term, only when `kl_beta` > 0) is the model with its adapter switched
off under an adapter strategy (no second copy), or a frozen copy of the base model otherwise.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from pydantic import BaseModel, Field
from rich.table import Table
from torch import nn

from strop.data.preference import collate_sequences
from strop.data.prompts import PROMPT_FORMATS, build_prompt_data
from strop.errors import StropError
from strop.models.loading import eval_mode
from strop.objectives.base import Objective, model_inputs, shifted_token_logps
from strop.rl.rewards import REWARDS, RewardSpec, build_rewards, score_rewards
from strop.rl.rollout import Completion, SamplingParams, sample
from strop.safe_io import disk_errors


class RolloutParams(BaseModel):
    rewards: list[RewardSpec] = Field(default_factory=list, description="(RL) Reward functions: list of {type, weight, "
                                      f"name?, ...options}}; types {', '.join(REWARDS)}.")
    num_generations: int = Field(8, gt=0, description="(RL) Completions sampled per prompt (the GRPO group size).")
    max_completion_length: int = Field(256, gt=0, description="(RL) Most tokens generated per completion.")
    temperature: float = Field(1.0, ge=0, description="(RL) Sampling temperature of rollouts (0: greedy).")
    top_p: float = Field(1.0, gt=0, le=1, description="(RL) Nucleus sampling of rollouts.")
    top_k: int = Field(0, ge=0, description="(RL) Top-k sampling of rollouts (0: off).")
    stop_strings: list[str] = Field(default_factory=list, description="(RL) A completion also ends where one of these appears.")
    generation_batch_size: int | None = Field(None, gt=0, description="(RL) Prompts per sampling call (default: all prompts of an optimizer step).")
    num_iterations: int = Field(1, gt=0, description="(RL) Optimizer steps on each batch of rollouts (μ; PPO's epochs).")
    kl_beta: float | None = Field(None, ge=0, description="(RL) KL coefficient to the reference policy (GRPO default 0: no "
                                  "reference is loaded; PPO default 0.05).")
    epsilon_low: float = Field(0.2, gt=0, lt=1, description="(RL) Lower clip bound of the importance ratio: 1 - epsilon_low.")
    epsilon_high: float | None = Field(None, gt=0, description="(RL) Upper clip bound 1 + epsilon_high (DAPO's clip-higher; default epsilon_low).")
    log_completions_steps: int = Field(10, gt=0, description="(RL) Print a table of sampled completions every N steps.")


def sequence_batch(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded prompt+completion sequences, labels on the completion tokens only."""
    return collate_sequences([(r["input_ids"], r["prompt_len"]) for r in rows], pad_id)


def per_token(rows: list[dict], key: str, width: int) -> torch.Tensor:
    """Per-completion-token values of each row placed at the shifted positions of its completion tokens
    (position j holds the value for predicting token j + 1), zeros elsewhere."""
    out = torch.zeros(len(rows), width)
    for i, row in enumerate(rows):
        start = row["prompt_len"] - 1
        values = row[key]
        out[i, start:start + len(values)] = torch.tensor(values, dtype=torch.float32)
    return out


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token KL(π_θ ‖ π_ref) estimate  exp(ref − logp) − (ref − logp) − 1  (Schulman's k3: unbiased, ≥ 0)."""
    delta = ref_logps - logps
    return delta.exp() - delta - 1


@torch.no_grad()
def token_entropy(logits: torch.Tensor, mask: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Summed entropy of the policy's next-token distribution over the masked (shifted) positions."""
    total = torch.zeros((), dtype=torch.float32, device=logits.device)
    selected = logits[:, :-1][mask]
    for start in range(0, selected.shape[0], chunk):
        log_p = selected[start:start + chunk].float().log_softmax(-1)
        total += -(log_p.exp() * log_p).sum()
    return total


class RLObjective(Objective):
    """Base of the objectives that learn from their own sampled completions."""

    rows_from_model = True

    dataset_types = tuple(PROMPT_FORMATS)
    output_files = ("completions.jsonl",)
    default_kl_beta = 0.0

    # ------------------------------------------------------------------ data
    def updates_per_batch(self, cfg) -> int:
        return cfg.num_iterations

    def build_data(self, cfg, tokenizer, base_dir: Path | None):
        if not cfg.rewards:
            raise StropError(f"rl: {self.name} needs rewards: e.g. rewards: [{{type: math, weight: 1.0}}] (see README, RL)")
        self.base_dir = base_dir
        self.rewards = build_rewards(cfg.rewards, base_dir)  # one that cannot be built fails before any output
        return build_prompt_data(cfg, tokenizer, base_dir, cfg.max_completion_length)

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        """Completion tokens of the rows that count (token-level normalisation)."""
        return int(((batch["labels"][:, 1:] != -100) & (batch["weights"][:, None] > 0)).sum())

    # ------------------------------------------------------------------ set-up
    def prepare_training(self, run) -> None:
        from strop.runtime import distributed

        if distributed.launched():
            raise StropError(f"rl: {self.name} does not run under torchrun yet; train on one process")
        cfg = self.cfg = run.cfg
        self.kl_beta = cfg.kl_beta if cfg.kl_beta is not None else self.default_kl_beta
        if getattr(self, "rewards", None) is None:
            self.rewards = build_rewards(cfg.rewards, getattr(self, "base_dir", None))
        self.sampling = SamplingParams(cfg.max_completion_length, cfg.temperature, cfg.top_p, cfg.top_k, tuple(cfg.stop_strings))
        self.generator = torch.Generator(device=run.device)
        self.reference = None
        if self.kl_beta > 0 and not hasattr(run.model, "disable_adapter"):
            from strop.models import load_model

            dtype = next(run.strategy.base_model(run.model).parameters()).dtype
            self.reference = load_model(run.model_path, dtype if dtype.is_floating_point else torch.float32,
                                        cfg.trust_remote_code).to(run.device).eval().requires_grad_(False)
        self.buffer_step, self.buffer = None, []
        self.train_stats: dict[str, float] = {}

    # ------------------------------------------------------------------ rollouts
    def sample_groups(self, run, prompt_rows: list[dict], n: int, seed: int, params: SamplingParams | None = None) -> list[dict]:
        """Completions for each prompt row, scored: one dict per prompt with its n completions."""
        self.generator.manual_seed(seed)
        size = self.cfg.generation_batch_size or len(prompt_rows)
        completions: list[Completion] = []
        for start in range(0, len(prompt_rows), size):
            chunk = prompt_rows[start:start + size]
            completions += sample(run.model, run.tokenizer, [r["input_ids"] for r in chunk], params or self.sampling, n, self.generator)
        prompts = [r["prompt"] for r in prompt_rows for _ in range(n)]
        rows = [r["row"] for r in prompt_rows for _ in range(n)]
        where = [r["where"] for r in prompt_rows for _ in range(n)]
        total, per_reward = score_rewards(self.rewards, prompts, [c.text for c in completions], rows, where)
        total = [t + s for t, s in zip(total, self.reward_shaping(completions, per_reward))]
        return [{"prompt_row": r, "completions": completions[i * n:(i + 1) * n], "rewards": total[i * n:(i + 1) * n],
                 "per_reward": {k: v[i * n:(i + 1) * n] for k, v in per_reward.items()}}
                for i, r in enumerate(prompt_rows)]

    def reward_shaping(self, completions: list[Completion], per_reward: dict[str, list[float]]) -> list[float]:
        """Extra reward added to the configured ones (DAPO's overlong penalty); logged in per_reward."""
        return [0.0] * len(completions)

    def rollout_rows(self, group: dict) -> list[dict]:
        prompt = group["prompt_row"]["input_ids"]
        return [{"input_ids": prompt + c.ids, "prompt_len": len(prompt), "completion_len": len(c.ids),
                 "finished": c.finished, "reward": r, "weight": 1.0} for c, r in zip(group["completions"], group["rewards"])]

    def step_rows(self, run, step: int, micro_batches: list[list[dict]]) -> tuple[list[list[dict]], dict[str, float]]:
        """The rollouts the step trains on, grouped as the prompts were, and the rollout metrics. Rollouts
        are sampled on the first of each `num_iterations` steps (and after a resume) and reused after."""
        data_step = step // self.cfg.num_iterations
        if self.buffer_step == data_step:
            return self.buffer, {}
        groups_per_micro = [len(rows) for rows in micro_batches]
        prompt_rows = [row for rows in micro_batches for row in rows]
        seed = self.cfg.seed * 1_000_003 + data_step
        groups, metrics = self.make_groups(run, prompt_rows, seed)
        rows = self.score_rows(run, groups)
        n = self.cfg.num_generations
        out, start = [], 0
        for count in groups_per_micro:
            out.append(rows[start * n:(start + count) * n])
            start += count
        self.buffer_step, self.buffer = data_step, out
        self._log_completions(run, step, groups)
        return out, metrics

    def make_groups(self, run, prompt_rows: list[dict], seed: int) -> tuple[list[dict], dict[str, float]]:
        groups = self.sample_groups(run, prompt_rows, self.cfg.num_generations, seed)
        return groups, rollout_metrics(groups)

    def score_rows(self, run, groups: list[dict]) -> list[dict]:
        raise NotImplementedError

    # ------------------------------------------------------------------ log-probs
    def logps_no_grad(self, model: nn.Module, rows: list[dict], pad_id: int) -> list[list[float]]:
        """Per-completion-token log-probs of each row under `model` (dropout off)."""
        batch = {k: v.to(self.device_of(model)) for k, v in sequence_batch(rows, pad_id).items()}
        with torch.no_grad(), eval_mode(model):
            logits = model(**model_inputs(batch, model), use_cache=False).logits
        logps, _ = shifted_token_logps(logits, batch["labels"])
        return [logps[i, r["prompt_len"] - 1: r["prompt_len"] - 1 + r["completion_len"]].tolist() for i, r in enumerate(rows)]

    def reference_logps(self, run, rows: list[dict]) -> list[list[float]]:
        if self.reference is not None:
            return self.logps_no_grad(self.reference, rows, run.tokenizer.pad_token_id)
        with run.model.disable_adapter():
            return self.logps_no_grad(run.model, rows, run.tokenizer.pad_token_id)

    @staticmethod
    def device_of(model: nn.Module) -> torch.device:
        return next(model.parameters()).device

    def chunks(self, rows: list[dict]) -> list[list[dict]]:
        size = self.cfg.micro_batch_size * self.cfg.num_generations
        return [rows[i:i + size] for i in range(0, len(rows), size)]

    # ------------------------------------------------------------------ metrics
    def add_train_stats(self, **values: float) -> None:
        for key, value in values.items():
            self.train_stats[key] = self.train_stats.get(key, 0.0) + float(value)

    def finish_step(self) -> dict[str, float]:
        """Token-averaged statistics of the step's loss passes (clip fraction, KL, entropy)."""
        stats, self.train_stats = self.train_stats, {}
        tokens = stats.pop("tokens", 0.0)
        return {k: v / tokens for k, v in stats.items()} if tokens else {}

    def _log_completions(self, run, step: int, groups: list[dict]) -> None:
        """Every rollout goes to completions.jsonl; every log_completions_steps steps a few are printed."""
        path = Path(self.cfg.output_dir) / "completions.jsonl"
        with disk_errors(path), path.open("a") as out:
            for g in groups:
                for i, c in enumerate(g["completions"]):
                    out.write(json.dumps({"step": step, "prompt": g["prompt_row"]["prompt"][-1]["content"], "completion": c.text,
                                          "tokens": len(c.ids), "finished": c.finished, "reward": g["rewards"][i],
                                          **{k: v[i] for k, v in g["per_reward"].items()}}) + "\n")
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

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, run) -> dict[str, float]:
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
    metrics = {"reward": mean(rewards), "reward_std": std(rewards),
               "zero_variance_groups": mean([float(max(g["rewards"]) == min(g["rewards"])) for g in groups]),
               "completion_length": mean([len(c.ids) for c in completions]),
               "truncated": mean([float(not c.finished) for c in completions])}
    for name in groups[0]["per_reward"]:
        values = [v for g in groups for v in g["per_reward"][name]]
        metrics[f"reward/{name}"], metrics[f"reward/{name}_std"] = mean(values), std(values)
    return metrics
