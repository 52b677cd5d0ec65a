"""PPO for RLHF (Schulman et al. 2017; Ouyang et al. 2022, "InstructGPT").

The policy samples completions; the configured rewards (typically `type: reward_model`, a model trained
with `rl: reward`, possibly plus verifiable ones) score each whole completion. Per completion token t the
reward is the KL penalty against the reference, plus the score on the last token:

    r_t = −β (log π_old(o_t) − log π_ref(o_t))   (+ score at t = last)

A value head V estimates the return from every position; generalised advantage estimation gives

    δ_t = r_t + γ V_{t+1} − V_t,   Â_t = Σ_k (γλ)^k δ_{t+k},   R_t = Â_t + V_t

(advantages whitened over the batch). The loss per token, averaged over all completion tokens of the step:

    −min(ρ_t Â_t, clip(ρ_t, 1 − ε_low, 1 + ε_high) Â_t) + c_v · ½ max((V_t − R_t)², (clip(V_t, V_old ± ε_v) − R_t)²)

Memory: the value head is a linear layer on the policy's own final hidden state (one backbone, not a
second critic model), and under an adapter strategy the reference is the base with the adapter switched
off, so PPO holds one model. The head is saved beside the artifact as value_head.safetensors.

Under torchrun the head is part of the root FSDP unit and runs inside the model's forward (a hook on
lm_head), where that unit's weights are gathered; the whitening of advantages takes its mean and
std over every rank's completion tokens (torchrun's filler rows count in neither).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from pydantic import Field
from safetensors.torch import save_file
from torch import nn

from strop.models.heads import VALUE_HEAD_ATTRIBUTE, VALUE_HEAD_FILE, ValueHead, attach_head
from strop.models.loading import eval_mode
from strop.objectives.base import model_inputs, shifted_token_logps
from strop.objectives.grpo import grpo_token_loss
from strop.objectives.rl_common import RLObjective, RolloutParams, per_token, sequence_batch, token_entropy
from strop.run_types import RunState
from strop.runtime import distributed

if TYPE_CHECKING:
    from transformers import PretrainedConfig


class PPOParams(RolloutParams):
    gae_gamma: float = Field(1.0, ge=0, le=1, description="(PPO) Discount γ of the per-token rewards.")
    gae_lambda: float = Field(0.95, ge=0, le=1, description="(PPO) GAE λ.")
    vf_coef: float = Field(0.1, ge=0, description="(PPO) Weight c_v of the value loss.")
    cliprange_value: float = Field(
        0.2, gt=0, description="(PPO) Clip of the value prediction around its rollout value."
    )


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns of one completion (1-D tensors over its tokens; V after the end is 0)."""
    advantages = torch.zeros_like(rewards)
    running: float | torch.Tensor = 0.0
    for t in reversed(range(len(rewards))):
        following = values[t + 1] if t + 1 < len(values) else 0.0
        running = rewards[t] + gamma * following - values[t] + gamma * lam * running
        advantages[t] = running
    return advantages, advantages + values


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip: float) -> torch.Tensor:
    """Per-token clipped value loss ½ max((V − R)², (clip(V, V_old ± clip) − R)²)."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)


@contextmanager
def capture_values(lm_head: nn.Module, value_head: nn.Module):
    """Records the value head's output on the input of the LM head (the final normed hidden state)
    during a forward pass. Computed inside the forward, where a sharded model's root weights (the value
    head's among them) are gathered."""
    captured: dict[str, torch.Tensor] = {}

    def record(module, args) -> None:
        captured["values"] = value_head(args[0].float()).squeeze(-1)

    handle = lm_head.register_forward_pre_hook(record)
    try:
        yield captured
    finally:
        handle.remove()


class PPOObjective(RLObjective):
    name = "ppo"
    params = PPOParams
    default_kl_beta = 0.05

    def prepare_training(self, run: RunState) -> None:
        super().prepare_training(run)
        base = run.strategy.base_model(run.model)
        self.lm_head = base.get_output_embeddings()
        self.value_head = attach_head(
            base, VALUE_HEAD_ATTRIBUTE, ValueHead(cast("PretrainedConfig", base.config).hidden_size).to(run.device)
        )

    def forward(
        self, model: nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits, token log-probs, completion mask and values at the shifted positions."""
        with capture_values(self.lm_head, self.value_head) as captured:
            logits = model(**model_inputs(batch, model), use_cache=False).logits
        logps, mask = shifted_token_logps(logits, batch["labels"])
        values = captured["values"][:, -logits.shape[1] :][:, :-1]  # prompt tuning: virtual positions come first
        return logits, logps, mask, values

    def score_rows(self, run: RunState, groups: list[dict]) -> list[dict]:
        cfg = self.cfg
        rows = [row for g in groups for row in self.rollout_rows(g)]
        for chunk in self.chunks(rows):
            batch = {k: v.to(run.device) for k, v in sequence_batch(chunk, run.tokenizer.pad_token_id).items()}
            with torch.no_grad(), eval_mode(run.model):
                _, logps, _, values = self.forward(run.model, batch)
            refs = self.reference_logps(run, chunk) if self.kl_beta > 0 else None
            for i, row in enumerate(chunk):
                span = slice(row["prompt_len"] - 1, row["prompt_len"] - 1 + row["completion_len"])
                row["old_logps"], row["old_values"] = logps[i, span].tolist(), values[i, span].tolist()
                old = torch.tensor(row["old_logps"])
                kl = old - torch.tensor(refs[i]) if refs else torch.zeros_like(old)
                rewards = -self.kl_beta * kl
                rewards[-1] += row["reward"]
                advantages, returns = gae(rewards, torch.tensor(row["old_values"]), cfg.gae_gamma, cfg.gae_lambda)
                row["advantages"], row["returns"], row["rollout_kl"] = (
                    advantages.tolist(),
                    returns.tolist(),
                    float(kl.sum()),
                )
        counted = [row for row in rows if row["counted"]]  # torchrun's filler rows stay out of every statistic
        flat = torch.tensor([a for row in counted for a in row["advantages"]], dtype=torch.float64)
        total = distributed.sum_over_ranks(
            {
                "n": flat.numel(),
                "sum": float(flat.sum()),
                "squares": float((flat**2).sum()),
                "kl": sum(r["rollout_kl"] for r in counted),
                "tokens": sum(r["completion_len"] for r in counted),
            }
        )
        centre = total["sum"] / max(1.0, total["n"])
        spread = (
            math.sqrt(max(0.0, total["squares"] - total["n"] * centre**2) / (total["n"] - 1)) if total["n"] > 1 else 1.0
        )
        for row in rows:
            row["advantages"] = ((torch.tensor(row["advantages"]) - centre) / (spread + 1e-8)).tolist()
        self.rollout_kl = total["kl"] / max(1.0, total["tokens"])
        return rows

    def rollout_stats(self) -> dict[str, float]:
        return {"kl": self.rollout_kl} if self.kl_beta > 0 else {}

    def collate(self, rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
        batch = sequence_batch(rows, pad_id)
        width = batch["input_ids"].shape[1] - 1
        for key in ("old_logps", "old_values", "advantages", "returns"):
            batch[key] = per_token(rows, key, width)
        batch["weights"] = torch.tensor([r["weight"] for r in rows], dtype=torch.float32)
        return batch

    def loss(self, model, batch, denominator):
        cfg = self.cfg
        logits, logps, mask, values = self.forward(model, batch)
        mask = mask & (batch["weights"][:, None] > 0)
        policy, cut, _ = grpo_token_loss(
            logps, batch["old_logps"], batch["advantages"], cfg.epsilon_low, cfg.epsilon_high or cfg.epsilon_low
        )
        critic = value_loss(values, batch["old_values"], batch["returns"], cfg.cliprange_value)
        loss = ((policy + cfg.vf_coef * critic) * mask).sum() / denominator
        self.add_train_stats(
            tokens=float(mask.sum()),
            clip_fraction=float((cut & mask).sum()),
            value_loss=float((critic.detach() * mask).sum()),
            entropy=float(token_entropy(logits, mask)),
        )
        return loss, {"loss": float(loss.detach())}

    def save_artifacts(self, model: nn.Module, out_dir: Path) -> None:
        head = self.value_head
        save_file(
            {
                "weight": head.weight.detach().float().cpu().contiguous(),
                "bias": head.bias.detach().float().cpu().contiguous(),
            },
            str(Path(out_dir) / VALUE_HEAD_FILE),
        )
