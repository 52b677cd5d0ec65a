"""Reward model: a scalar score per (prompt, response), trained on preference pairs with the
Bradley-Terry likelihood (Bradley & Terry 1952; Ouyang et al. 2022, "InstructGPT", eq. 1):

    L = −log σ( r(x, y_c) − r(x, y_r) )

r is a linear head (models/heads.py; no bias: Bradley-Terry is blind to a shift) on the final hidden state of the
response's last token. Selected by `rl: reward` or Axolotl's `reward_model: true`.

Why a head this objective owns rather than AutoModelForSequenceClassification: every update strategy
loads, adapts and saves a causal LM, and a different model class would have to pass through all of them.
Instead `prepare_training` attaches the head to the loaded model as a submodule, so it is trainable,
optimized and checkpointed with the rest under any strategy, and `save_artifacts` writes it next to
the final adapter or model as `reward_head.safetensors` (+ `reward_head.json`). The saved model or
adapter is an ordinary causal LM (the head is kept out of model.safetensors);
`strop.rl.reward_scorer.RewardScorer` loads both and scores, and `strop reward-score` does it from the shell.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from safetensors.torch import save_file
from torch import nn

from strop.data.preference import PAIR_FORMATS
from strop.models.heads import (
    HEAD_ATTRIBUTE,
    HEAD_CONFIG,
    HEAD_FILE,
    RewardHead,
    attach_head,
    find_head,
    sequence_rewards,
)
from strop.objectives.preference_common import PairObjective, halves, pair_metrics, shares
from strop.run_types import RunState


class RewardParams(BaseModel):
    reward_model: bool = Field(False, description="Train a reward model (same as rl: reward).")


def bradley_terry_loss(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair −log σ(r_c − r_r) and metrics."""
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    metrics = pair_metrics(chosen_rewards, rejected_rewards, chosen_rewards, rejected_rewards)
    del metrics["logps/chosen"], metrics["logps/rejected"]
    return losses, metrics


class RewardObjective(PairObjective):
    name = "reward"
    dataset_types = tuple(PAIR_FORMATS)
    params = RewardParams

    def prepare_training(self, run: RunState) -> None:
        """Attach a fresh head to the (strategy-prepared) model, once, before the optimizer is built."""
        self.cfg = run.cfg
        base = run.strategy.base_model(run.model)
        if isinstance(getattr(base, HEAD_ATTRIBUTE, None), RewardHead):
            return
        config = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
        attach_head(
            base,
            HEAD_ATTRIBUTE,
            RewardHead(config.hidden_size, getattr(config, "initializer_range", 0.02)).to(run.device),
        )

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], denominator: float):
        chosen, rejected = halves(sequence_rewards(model, find_head(model), batch))
        per_example, metrics = bradley_terry_loss(chosen, rejected)
        return shares(per_example, metrics, denominator)

    def save_artifacts(self, model: nn.Module, out_dir: Path) -> None:
        """reward_head.safetensors (weight [1, hidden]) and reward_head.json beside the model/adapter."""
        head = find_head(model)
        save_file({"weight": head.weight.detach().float().cpu().contiguous()}, str(Path(out_dir) / HEAD_FILE))
        (Path(out_dir) / HEAD_CONFIG).write_text(
            json.dumps(
                {
                    "format": "strop-reward-head/1",
                    "hidden_size": head.in_features,
                    "pooling": "last_token",
                    "hidden": "final normed hidden state of the decoder",
                },
                indent=1,
            )
        )
