"""What the RL objectives (GRPO and its DAPO / Dr. GRPO options, PPO) share: prompt data, scoring of
sampled groups into rollout rows, the reference policy, and the statistics of their loss passes.

The orchestration (sampling groups, rewards, the rollout buffer, completion logging, evaluation by
reward) is rl/engine.py's: the loop asks it for each step's rows. An RL objective keeps what only it
knows: extra reward (`reward_shaping`), which groups to keep (`select_groups`), how scored groups become
rows (`score_rows`), collation and the loss. The log-probs of the policy that sampled the rollouts are
kept on the rows for the importance ratio.

The reference policy (for the KL term, only when `kl_beta` > 0) is the model with its adapter switched
off under an adapter strategy (no second copy), or a frozen copy of the base model otherwise.

Under torchrun (FSDP2) `rl_generation` chooses what rollouts sample from:
- gather_per_layer (default): the sharded policy itself. Each decode step is an FSDP forward that gathers
  one layer's weights at a time, so no rank ever holds more than one layer beyond its shard; every rank
  decodes in lockstep, eagerly (no CUDA graph).
- full_copy: a plain, unsharded copy of the model on every rank, made before sharding; before each
  rollout its trainable weights are gathered from the shards (for LoRA: the adapters only). Decoding then
  needs no communication and keeps the CUDA-graph decoder, at the memory of one more whole model per rank.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, Field
from torch import nn

from strop.data.preference import collate_sequences
from strop.data.prompts import PROMPT_FORMATS, build_prompt_data
from strop.errors import StropError
from strop.models.loading import eval_mode
from strop.objectives.base import Objective, model_inputs, shifted_token_logps
from strop.rl.rewards import REWARDS, RewardSpec
from strop.rl.rollout import Completion
from strop.run_types import RunConfig, RunState
from strop.runtime import distributed


class RolloutParams(BaseModel):
    rewards: list[RewardSpec] = Field(
        default_factory=list,
        description=f"(RL) Reward functions: list of {{type, weight, name?, ...options}}; types {', '.join(REWARDS)}.",
    )
    num_generations: int = Field(8, gt=0, description="(RL) Completions sampled per prompt (the GRPO group size).")
    max_completion_length: int = Field(256, gt=0, description="(RL) Most tokens generated per completion.")
    temperature: float = Field(1.0, ge=0, description="(RL) Sampling temperature of rollouts (0: greedy).")
    top_p: float = Field(1.0, gt=0, le=1, description="(RL) Nucleus sampling of rollouts.")
    top_k: int = Field(0, ge=0, description="(RL) Top-k sampling of rollouts (0: off).")
    stop_strings: list[str] = Field(
        default_factory=list, description="(RL) A completion also ends where one of these appears."
    )
    generation_batch_size: int | None = Field(
        None, gt=0, description="(RL) Prompts per sampling call (default: all prompts of an optimizer step)."
    )
    num_iterations: int = Field(
        1, gt=0, description="(RL) Optimizer steps on each batch of rollouts (μ; PPO's epochs)."
    )
    kl_beta: float | None = Field(
        None,
        ge=0,
        description="(RL) KL coefficient to the reference policy (GRPO default 0: no "
        "reference is loaded; PPO default 0.05).",
    )
    epsilon_low: float = Field(
        0.2, gt=0, lt=1, description="(RL) Lower clip bound of the importance ratio: 1 - epsilon_low."
    )
    epsilon_high: float | None = Field(
        None, gt=0, description="(RL) Upper clip bound 1 + epsilon_high (DAPO's clip-higher; default epsilon_low)."
    )
    log_completions_steps: int = Field(10, gt=0, description="(RL) Print a table of sampled completions every N steps.")
    rl_generation: Literal["gather_per_layer", "full_copy"] = Field(
        "gather_per_layer",
        description="(RL) Under torchrun, what rollouts sample from: the sharded policy, gathered layer by "
        "layer (gather_per_layer), or a whole copy per rank refreshed before each rollout (full_copy: "
        "faster, one more model in memory).",
    )


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
        out[i, start : start + len(values)] = torch.tensor(values, dtype=torch.float32)
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
        log_p = selected[start : start + chunk].float().log_softmax(-1)
        total += -(log_p.exp() * log_p).sum()
    return total


class RLObjective(Objective):
    """Base of the objectives that learn from their own sampled completions."""

    rows_from_model = True

    dataset_types = tuple(PROMPT_FORMATS)
    output_files = ("completions.jsonl",)
    default_kl_beta = 0.0

    # ------------------------------------------------------------------ data
    def updates_per_batch(self, cfg: RunConfig) -> int:
        return cfg.num_iterations

    def build_data(self, cfg: RunConfig, tokenizer, base_dir: Path | None):
        if not cfg.rewards:
            raise StropError(
                f"rl: {self.name} needs rewards: e.g. rewards: [{{type: math, weight: 1.0}}] (see README, RL)"
            )
        return build_prompt_data(cfg, tokenizer, base_dir, cfg.max_completion_length)

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        """Completion tokens of the rows that count (token-level normalisation; filler rows weigh 0)."""
        return int(((batch["labels"][:, 1:] != -100) & (batch["weights"][:, None] > 0)).sum())

    # ------------------------------------------------------------------ set-up
    def prepare_training(self, run: RunState) -> None:
        cfg = self.cfg = run.cfg
        # before the loop shards the model: under torchrun with full_copy, the plain copy rollouts sample from
        self.generation_copy = (
            copy.deepcopy(run.model).eval().requires_grad_(False)
            if distributed.launched() and cfg.rl_generation == "full_copy"
            else None
        )
        self.kl_beta = cfg.kl_beta if cfg.kl_beta is not None else self.default_kl_beta
        self.reference = None
        self.reference_context = run.strategy.reference_context
        if self.kl_beta > 0 and self.reference_context(run.model) is None:
            from strop.models import load_model

            dtype = next(run.strategy.base_model(run.model).parameters()).dtype
            self.reference = (
                load_model(run.model_path, dtype if dtype.is_floating_point else torch.float32, cfg.trust_remote_code)
                .to(run.device)
                .eval()
                .requires_grad_(False)
            )
        self.train_stats: dict[str, float] = {}

    # ------------------------------------------------------------------ rollouts
    def rollout_policy(self, run: RunState) -> nn.Module:
        """The model this rollout samples from: the live policy, or (full_copy) the plain copy with the
        policy's trainable weights gathered into it now. Every rank calls it, in step."""
        if self.generation_copy is None:
            return run.model
        target = dict(self.generation_copy.named_parameters())
        with torch.no_grad():
            for name, param in run.model.named_parameters():
                if param.requires_grad and name in target:  # not PPO's value head, added after the copy
                    target[name].copy_(distributed.unsharded(param))
        return self.generation_copy

    def reward_shaping(self, completions: list[Completion], per_reward: dict[str, list[float]]) -> list[float]:
        """Extra reward added to the configured ones (DAPO's overlong penalty); logged in per_reward."""
        return [0.0] * len(completions)

    def rollout_rows(self, group: dict) -> list[dict]:
        """One row per completion; a filler group's rows (torchrun: see rl/engine.py) weigh 0 and count
        in no normaliser."""
        prompt = group["prompt_row"]["input_ids"]
        filler = group.get("filler", False)
        return [
            {
                "input_ids": prompt + c.ids,
                "prompt_len": len(prompt),
                "completion_len": len(c.ids),
                "finished": c.finished,
                "reward": r,
                "weight": 0.0 if filler else 1.0,
                "counted": 0.0 if filler else 1.0,
            }
            for c, r in zip(group["completions"], group["rewards"])
        ]

    def select_groups(
        self, sampler, run: RunState, groups: list[dict], seed: int
    ) -> tuple[list[dict], dict[str, float]]:
        """The groups to train on, out of those `sampler` (the rollout engine) sampled, and metrics of the
        choice; `sampler.sample_groups(run, prompt_rows, n, seed, positions=...)` samples more. All of them by
        default."""
        return groups, {}

    def score_rows(self, run: RunState, groups: list[dict]) -> list[dict]:
        raise NotImplementedError

    def rollout_stats(self) -> dict[str, float]:
        """Metrics of the last `score_rows` (PPO's KL to the reference)."""
        return {}

    # ------------------------------------------------------------------ log-probs
    def logps_no_grad(self, model: nn.Module, rows: list[dict], pad_id: int) -> list[list[float]]:
        """Per-completion-token log-probs of each row under `model` (dropout off)."""
        batch = {k: v.to(self.device_of(model)) for k, v in sequence_batch(rows, pad_id).items()}
        with torch.no_grad(), eval_mode(model):
            logits = model(**model_inputs(batch, model), use_cache=False).logits
        logps, _ = shifted_token_logps(logits, batch["labels"])
        return [
            logps[i, r["prompt_len"] - 1 : r["prompt_len"] - 1 + r["completion_len"]].tolist()
            for i, r in enumerate(rows)
        ]

    def reference_logps(self, run: RunState, rows: list[dict]) -> list[list[float]]:
        if self.reference is not None:
            return self.logps_no_grad(self.reference, rows, run.tokenizer.pad_token_id)
        with self.reference_context(run.model):
            return self.logps_no_grad(run.model, rows, run.tokenizer.pad_token_id)

    @staticmethod
    def device_of(model: nn.Module) -> torch.device:
        return next(model.parameters()).device

    def chunks(self, rows: list[dict]) -> list[list[dict]]:
        size = self.cfg.micro_batch_size * self.cfg.num_generations
        return [rows[i : i + size] for i in range(0, len(rows), size)]

    # ------------------------------------------------------------------ metrics
    def add_train_stats(self, **values: float) -> None:
        for key, value in values.items():
            self.train_stats[key] = self.train_stats.get(key, 0.0) + float(value)

    def finish_step(self) -> dict[str, float]:
        """Token-averaged statistics of the step's loss passes (clip fraction, KL, entropy)."""
        stats, self.train_stats = distributed.sum_over_ranks(self.train_stats), {}
        tokens = stats.pop("tokens", 0.0)
        return {k: v / tokens for k, v in stats.items()} if tokens else {}
