"""GRPO / DAPO / Dr. GRPO against TRL's GRPOTrainer._compute_loss, values and gradients.

TRL's loss is a method of a trainer that needs a model, datasets and an accelerator to build. It only reads
a handful of attributes, so it is called unbound on a SimpleNamespace that carries them, and the model's
per-token log-probs come from a stub in place of the forward pass. strop's side runs the real
GRPOObjective.loss on the same logits through a stub model, so count(), aggregate() and the masking glue are
all exercised. strop computes log-probs in float32 (shifted_token_logps), hence 1e-5 on float64 inputs.

Truncated completions are masked the way TRL's _generate_and_score_completions does it: their rows of
completion_mask are zeroed.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from strop.objectives.grpo import GRPOObjective

grpo_trainer = pytest.importorskip(
    "trl.trainer.grpo_trainer", reason="TRL is a test-only reference: `make test` installs it"
)

PROMPT, WIDTH, VOCAB, PAD = 3, 6, 11, 0
LENGTHS = [6, 2, 5, 6, 3, 1, 6, 4]  # completion lengths; 6 = max_completion_length: truncated
ATOL = 1e-5


class _Accelerator:
    """The single-process accelerator TRL's loss logs through: gather and reduce are identities."""

    device = torch.device("cpu")
    num_processes = 1

    @staticmethod
    def gather(x):
        return x

    @staticmethod
    def reduce(x, reduction="sum"):
        return x


def trl_loss(
    loss_type: str,
    logps: torch.Tensor,
    old: torch.Tensor,
    completion_mask: torch.Tensor,
    advantages: torch.Tensor,
    eps_low: float,
    eps_high: float,
) -> torch.Tensor:
    """TRL 1.x's GRPO loss on given per-token log-probs (B, C)."""
    entropies = torch.zeros_like(logps)
    stub = SimpleNamespace(
        loss_type=loss_type,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        beta=0.0,
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        use_vllm=False,
        aux_loss_enabled=False,
        _entropy_bonus_enabled=False,
        max_completion_length=WIDTH,
        current_gradient_accumulation_steps=1,
        model=SimpleNamespace(training=True),
        accelerator=_Accelerator(),
        _metrics={"train": defaultdict(list)},
        args=SimpleNamespace(delta=None, use_bias_correction_kl=False, steps_per_generation=1),
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, entropies, None),
    )
    batch = len(logps)
    inputs = {
        "prompt_ids": torch.ones(batch, PROMPT, dtype=torch.long),
        "prompt_mask": torch.ones(batch, PROMPT, dtype=torch.long),
        "completion_ids": torch.ones(batch, WIDTH, dtype=torch.long),
        "completion_mask": completion_mask,
        "advantages": advantages,
        "old_per_token_logps": old,
        "num_items_in_batch": completion_mask.sum(),
    }
    return grpo_trainer.GRPOTrainer._compute_loss(stub, None, inputs)


def strop_objective(loss_type: str, eps_low: float, eps_high: float) -> GRPOObjective:
    objective = GRPOObjective()
    objective.cfg = SimpleNamespace(max_completion_length=WIDTH)
    objective.loss_type, objective.eps_low, objective.eps_high, objective.kl_beta = loss_type, eps_low, eps_high, 0.0
    objective.train_stats = {}
    return objective


def strop_loss(
    objective: GRPOObjective, logits: torch.Tensor, old: torch.Tensor, advantages: torch.Tensor, masked: list[bool]
) -> torch.Tensor:
    rows = [
        {
            "input_ids": [1] * PROMPT + [2] * n,
            "prompt_len": PROMPT,
            "advantage": float(a),
            "weight": 0.0 if m else 1.0,
            "old_logps": old[i, :n].tolist(),
        }
        for i, (n, a, m) in enumerate(zip(LENGTHS, advantages, masked))
    ]
    batch = objective.collate(rows, PAD)
    batch["old_logps"] = batch["old_logps"].double()
    batch["old_logps"][:, PROMPT - 1 :] = old  # full float64 precision, not the rows' float32 round trip
    batch["advantages"] = advantages
    model = lambda **kwargs: SimpleNamespace(logits=logits[:, : batch["input_ids"].shape[1]])  # noqa: E731
    loss, _ = objective.loss(model, batch, objective.count(batch))
    return loss


def inputs(seed: int):
    """Random float64 logits over prompt+completion, the old policy's log-probs and advantages."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(LENGTHS), PROMPT + WIDTH, VOCAB, generator=generator, dtype=torch.float64)
    targets = torch.full((len(LENGTHS), WIDTH), 2)
    fresh = torch.gather(logits[:, PROMPT - 1 : -1].log_softmax(-1), 2, targets[..., None])[..., 0]
    old = fresh + 0.3 * torch.randn(fresh.shape, generator=generator, dtype=torch.float64)  # ratios beyond the clip
    advantages = torch.randn(len(LENGTHS), generator=generator, dtype=torch.float64)
    return logits, old, advantages


@pytest.mark.parametrize("mask_truncated", [False, True], ids=["all", "masked"])
@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_grpo_losses_and_gradients_match_trl(loss_type: str, mask_truncated: bool) -> None:
    logits, old, advantages = inputs(seed=len(loss_type) + mask_truncated)
    masked = [mask_truncated and n == WIDTH for n in LENGTHS]
    completion_mask = torch.tensor([[int(t < n and not m) for t in range(WIDTH)] for n, m in zip(LENGTHS, masked)])
    eps_low, eps_high = 0.2, 0.28

    theirs_logits = logits.clone().requires_grad_()
    targets = torch.full((len(LENGTHS), WIDTH), 2)
    logps = torch.gather(F.log_softmax(theirs_logits[:, PROMPT - 1 : -1], -1), 2, targets[..., None])[..., 0]
    theirs = trl_loss(loss_type, logps, old, completion_mask, advantages, eps_low, eps_high)
    theirs.backward()

    ours_logits = logits.clone().requires_grad_()
    ours = strop_loss(strop_objective(loss_type, eps_low, eps_high), ours_logits, old, advantages, masked)
    ours.backward()

    assert abs(ours.item() - theirs.item()) < ATOL, (ours.item(), theirs.item())
    assert torch.allclose(ours_logits.grad, theirs_logits.grad, atol=ATOL, rtol=0)
    if any(masked):
        assert ours_logits.grad[torch.tensor(masked)].abs().max().item() == 0
