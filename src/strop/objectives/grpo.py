"""GRPO (Shao et al. 2024, "DeepSeekMath"; DeepSeek-R1), with DAPO's (Yu et al. 2025) and Dr. GRPO's
(Liu et al. 2025, "Understanding R1-Zero-Like Training") options.

For each prompt x the policy samples a group of G completions o_1..o_G with rewards r_1..r_G. The
advantage of every token of o_i is its completion's reward relative to the group:

    Â_i = (r_i − mean(r)) / (std(r) + 1e-4)        (scale_rewards: false → Â_i = r_i − mean(r), Dr. GRPO)

with std the sample standard deviation of the group. With ρ_t = π_θ(o_t | x, o_<t) / π_old(o_t | x, o_<t)
(π_old: the policy that sampled; ρ = 1 with a live gradient when num_iterations = 1), each token costs

    ℓ_t = −min(ρ_t Â, clip(ρ_t, 1 − ε_low, 1 + ε_high) Â) + β · KL_t,   KL_t = e^(ref − logp) − (ref − logp) − 1

and the loss aggregates ℓ over the step by `loss_type`:
- grpo:    mean over completions of each completion's token mean (the original; favours short answers),
- dapo:    sum over all tokens / number of tokens (token-level: long completions count per token),
- dr_grpo: sum over all tokens / (number of completions × max_completion_length) (no length bias).

`mask_truncated_completions` (DAPO's overlong filtering) zeroes the loss of every completion cut at
max_completion_length. What that does to each normaliser follows from the paper that defines it:
- dapo divides by the tokens that carry loss (DAPO eq. 8, 1 / Σ|o_i|), so a masked completion's tokens leave
  the denominator as they leave the sum;
- grpo and dr_grpo keep counting the masked completions: the 1/G of GRPO is the group size, and Dr. GRPO's
  point is that the normaliser is a constant, never a function of the sampled lengths. Truncation is a
  length event: dropping truncated rows from the count would make the weight of every remaining token grow
  with the number of completions that ran long (a length-dependent normaliser again, and a step size that
  jumps with the truncation rate, 1/(1 − share truncated)). This is also TRL's choice.

DAPO's other options: dynamic sampling (groups whose rewards are all equal carry no signal; drop them and
sample more prompts, at most `dynamic_sampling_max_rounds` extra rounds), overlong reward shaping (a
linear penalty from 0 to −overlong_penalty_factor over the last `overlong_buffer_length` tokens of the
budget), and masking truncated completions out of the loss. `rl: dapo` and `rl: dr_grpo` are GRPO with
those papers' settings as defaults (any of them can still be set explicitly).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from strop.objectives.base import model_inputs, shifted_token_logps
from strop.objectives.rl_common import RLObjective, RolloutParams, k3_kl, per_token, sequence_batch, token_entropy
from strop.run_types import RunState
from strop.runtime import distributed


class GRPOParams(RolloutParams):
    loss_type: Literal["grpo", "dapo", "dr_grpo"] = Field(
        "grpo",
        description="(GRPO) Loss aggregation: grpo (per-completion "
        "mean), dapo (token-level), dr_grpo (constant normaliser).",
    )
    scale_rewards: bool = Field(
        True, description="(GRPO) Divide advantages by the group's reward std (false: Dr. GRPO)."
    )
    dynamic_sampling: bool = Field(
        False, description="(GRPO) DAPO: drop groups whose rewards are all equal and sample more prompts."
    )
    dynamic_sampling_max_rounds: int = Field(
        3, ge=0, description="(GRPO) Extra sampling rounds dynamic sampling may take per step."
    )
    overlong_buffer_length: int | None = Field(
        None,
        gt=0,
        description="(GRPO) DAPO overlong shaping: penalty ramps over this many tokens before max_completion_length.",
    )
    overlong_penalty_factor: float = Field(1.0, ge=0, description="(GRPO) Penalty at max_completion_length.")
    mask_truncated_completions: bool = Field(
        False,
        description="(GRPO) Zero the loss of completions cut at max_completion_length "
        "(they still count in the grpo and dr_grpo normalisers).",
    )


#: Defaults `rl: dapo` and `rl: dr_grpo` apply to keys the config does not set.
PRESETS: dict[str, dict] = {
    "grpo": {},
    "dapo": {
        "loss_type": "dapo",
        "epsilon_high": 0.28,
        "dynamic_sampling": True,
        "overlong_buffer_length": 64,
        "mask_truncated_completions": True,
    },
    "dr_grpo": {"loss_type": "dr_grpo", "scale_rewards": False},
}


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True) -> torch.Tensor:
    """Rewards (N·G,) grouped consecutively → advantages relative to each group's mean (and std)."""
    grouped = rewards.view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        spread = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(grouped[:, :1])
        centred = centred / (spread + 1e-4)
    return centred.view(-1)


def overlong_penalty(length: int, max_length: int, buffer: int, factor: float) -> float:
    """DAPO's soft overlong punishment: 0 up to max − buffer, then linear down to −factor at max."""
    start = max_length - buffer
    if length <= start:
        return 0.0
    return -factor * min(1.0, (length - start) / buffer)


def grpo_token_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    eps_low: float,
    eps_high: float,
    ref_logps: torch.Tensor | None = None,
    beta: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-token clipped surrogate (+ β·KL): returns (loss, where the clip cut the gradient, KL or None).

    logps/old_logps/ref_logps: (B, T) token log-probs; advantages: (B,) or (B, T)."""
    if advantages.dim() == 1:
        advantages = advantages[:, None]
    ratio = (logps - old_logps).exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    cut = clipped < unclipped  # the clipped branch is the smaller one: no gradient through ρ there
    kl = None
    if ref_logps is not None:
        kl = k3_kl(logps, ref_logps)
        loss = loss + beta * kl
    return loss, cut, kl


def aggregate(token_loss: torch.Tensor, mask: torch.Tensor, loss_type: str) -> torch.Tensor:
    """Per-completion contributions whose sum, divided by the step's `count`, is the loss."""
    summed = (token_loss * mask).sum(dim=1)
    if loss_type == "grpo":
        return summed / mask.sum(dim=1).clamp(min=1)
    return summed


class GRPOObjective(RLObjective):
    name = "grpo"
    params = GRPOParams

    def setting(self, key: str):
        """The config's value, or this objective's preset default for a key the config leaves unset."""
        preset = PRESETS[self.name]
        if key in preset and key not in self.cfg.model_fields_set:
            return preset[key]
        return getattr(self.cfg, key)

    def prepare_training(self, run: RunState) -> None:
        super().prepare_training(run)
        self.loss_type = self.setting("loss_type")
        self.eps_low = self.cfg.epsilon_low
        self.eps_high = self.setting("epsilon_high") or self.eps_low

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        """The step's normaliser (see the module docstring): every sampled completion counts for grpo and
        dr_grpo, masked ones included (torchrun's filler rows do not); only the tokens that carry loss
        count for dapo."""
        sequences = int(batch["counted"].sum())
        if self.loss_type == "grpo":
            return sequences
        if self.loss_type == "dr_grpo":
            return sequences * self.cfg.max_completion_length
        return super().count(batch)

    # -------------------------------------------------------------- rollouts
    def reward_shaping(self, completions, per_reward):
        buffer = self.setting("overlong_buffer_length")
        if not buffer:
            return super().reward_shaping(completions, per_reward)
        limit = self.cfg.max_completion_length
        penalties = [
            overlong_penalty(len(c.ids), limit, min(buffer, limit), self.cfg.overlong_penalty_factor)
            for c in completions
        ]
        per_reward["overlong"] = penalties
        return penalties

    def select_groups(self, sampler, run: RunState, groups, seed):
        """DAPO's dynamic sampling: groups whose completions all got one reward carry no gradient, so more
        prompts are sampled until every slot holds an informative group (or the rounds run out).

        Under torchrun each rank fills its own slots (groups never straddle ranks), in lockstep: a round
        runs while any rank lacks informative groups, and every rank then samples the largest shortfall
        (equal forwards on every rank), drawn from its own slice of the round's picks (no prompt twice)."""
        if not self.setting("dynamic_sampling") or self.cfg.num_generations == 1:
            return groups, {}
        real = [g for g in groups if not g.get("filler")]
        informative = [g for g in real if max(g["rewards"]) > min(g["rewards"])]
        flat = [g for g in real if max(g["rewards"]) == min(g["rewards"])]
        rounds = 0
        while rounds < self.cfg.dynamic_sampling_max_rounds:
            missing = distributed.max_count(max(0, len(real) - len(informative)))
            if not missing:
                break
            rounds += 1
            draws = torch.randint(
                len(run.train_rows),
                (missing * distributed.world_size(),),
                generator=torch.Generator().manual_seed(seed + 7919 * rounds),
            ).tolist()
            first = distributed.rank() * missing
            extra = sampler.sample_groups(
                run,
                [run.train_rows[i] for i in draws[first : first + missing]],
                self.cfg.num_generations,
                seed + 7919 * rounds,
                positions=list(range(first, first + missing)),
            )
            informative += [g for g in extra if max(g["rewards"]) > min(g["rewards"])]
        # refill what is still missing with flat groups (zero advantage); fillers keep their slots
        kept = (informative + flat)[: len(real)]
        counts = distributed.sum_over_ranks(
            {"kept": len(kept), "flat": sum(max(g["rewards"]) == min(g["rewards"]) for g in kept)}
        )
        return kept + [g for g in groups if g.get("filler")], {
            "dynamic_sampling_rounds": rounds,
            "kept_zero_variance_groups": counts["flat"] / max(1.0, counts["kept"]),
        }

    def score_rows(self, run: RunState, groups: list[dict]) -> list[dict]:
        n = self.cfg.num_generations
        rewards = torch.tensor([r for g in groups for r in g["rewards"]], dtype=torch.float32)
        advantages = group_advantages(rewards, n, self.setting("scale_rewards")).tolist()
        rows = [row for g in groups for row in self.rollout_rows(g)]
        mask_truncated = self.setting("mask_truncated_completions")
        for row, advantage in zip(rows, advantages):
            row["advantage"] = advantage
            if mask_truncated and not row["finished"]:
                row["weight"] = 0.0
        pad = run.tokenizer.pad_token_id
        for chunk in self.chunks(rows):
            if self.cfg.num_iterations > 1:
                for row, values in zip(chunk, self.logps_no_grad(run.model, chunk, pad)):
                    row["old_logps"] = values
            if self.kl_beta > 0:
                for row, values in zip(chunk, self.reference_logps(run, chunk)):
                    row["ref_logps"] = values
        return rows

    # -------------------------------------------------------------- loss
    def collate(self, rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
        batch = sequence_batch(rows, pad_id)
        width = batch["input_ids"].shape[1] - 1
        batch["advantages"] = torch.tensor([r["advantage"] for r in rows], dtype=torch.float32)
        batch["weights"] = torch.tensor([r["weight"] for r in rows], dtype=torch.float32)
        batch["counted"] = torch.tensor([r.get("counted", 1.0) for r in rows], dtype=torch.float32)
        for key in ("old_logps", "ref_logps"):
            if all(key in r for r in rows):
                batch[key] = per_token(rows, key, width)
        return batch

    def loss(self, model, batch, denominator):
        logits = model(**model_inputs(batch, model), use_cache=False).logits
        logps, mask = shifted_token_logps(logits, batch["labels"])
        mask = mask & (batch["weights"][:, None] > 0)
        old = batch["old_logps"] if "old_logps" in batch else logps.detach()
        token_loss, cut, kl = grpo_token_loss(
            logps, old, batch["advantages"], self.eps_low, self.eps_high, batch.get("ref_logps"), self.kl_beta
        )
        loss = aggregate(token_loss, mask, self.loss_type).sum() / denominator
        stats = {"tokens": mask.sum(), "clip_fraction": (cut & mask).sum(), "entropy": token_entropy(logits, mask)}
        if kl is not None:
            stats["kl"] = (kl * mask).sum()
        self.add_train_stats(**{k: float(v.detach()) if torch.is_tensor(v) else v for k, v in stats.items()})
        return loss, {"loss": float(loss.detach())}


class DAPOObjective(GRPOObjective):
    name = "dapo"


class DrGRPOObjective(GRPOObjective):
    name = "dr_grpo"
