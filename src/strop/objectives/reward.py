"""Reward model: a scalar score per (prompt, response), trained on preference pairs with the
Bradley-Terry likelihood (Bradley & Terry 1952; Ouyang et al. 2022, "InstructGPT", eq. 1):

    L = −log σ( r(x, y_c) − r(x, y_r) )

r is a linear head (no bias: Bradley-Terry is blind to a shift) on the final hidden state of the
response's last token. Selected by `rl: reward` or Axolotl's `reward_model: true`.

Why a head this objective owns rather than AutoModelForSequenceClassification: every update strategy
loads, adapts and saves a causal LM, and a different model class would have to pass through all of them.
Instead `prepare_training` attaches the head to the loaded model as a submodule, so it is trainable,
optimized and checkpointed with the rest under any strategy, and `save_artifacts` writes it next to
the final adapter or model as `reward_head.safetensors` (+ `reward_head.json`). The saved model or
adapter is an ordinary causal LM (the head is kept out of model.safetensors);
`strop.reward_score.RewardScorer` loads both and scores, and `strop reward-score` does it from the shell.
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
from strop.objectives.preference_common import PairObjective, halves, pair_metrics, shares

HEAD_FILE, HEAD_CONFIG = "reward_head.safetensors", "reward_head.json"
HEAD_ATTRIBUTE = "strop_reward_head"


class RewardParams(BaseModel):
    reward_model: bool = Field(False, description="Train a reward model (same as rl: reward).")


class RewardHead(nn.Linear):
    """hidden → 1, float32."""

    def __init__(self, hidden_size: int, init_std: float = 0.02):
        super().__init__(hidden_size, 1, bias=False, dtype=torch.float32)
        nn.init.normal_(self.weight, std=init_std)


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair −log σ(r_c − r_r) and metrics."""
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    metrics = pair_metrics(chosen_rewards, rejected_rewards, chosen_rewards, rejected_rewards)
    del metrics["logps/chosen"], metrics["logps/rejected"]
    return losses, metrics


def last_token_hidden(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Final (normed) hidden state at each right-padded sequence's last real token, without the LM head."""
    decoder = model.get_decoder()
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).last_hidden_state
    last = batch["attention_mask"].sum(dim=1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def sequence_rewards(model: nn.Module, head: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return head(last_token_hidden(model, batch).float()).squeeze(-1)


def find_head(model: nn.Module) -> RewardHead:
    head = next((m for m in model.modules() if isinstance(m, RewardHead)), None)
    if head is None:
        raise RuntimeError("the reward head is not attached: call objective.prepare_training(run) first")
    return head


class RewardObjective(PairObjective):
    name = "reward"
    dataset_types = tuple(PAIR_FORMATS)
    params = RewardParams

    def prepare_training(self, run) -> None:
        """Attach a fresh head to the (strategy-prepared) model, once, before the optimizer is built."""
        self.cfg = run.cfg
        base = run.strategy.base_model(run.model)
        if isinstance(getattr(base, HEAD_ATTRIBUTE, None), RewardHead):
            return
        config = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
        head = RewardHead(config.hidden_size, getattr(config, "initializer_range", 0.02)).to(run.device)
        setattr(base, HEAD_ATTRIBUTE, head)
        ignored = set(getattr(base, "_keys_to_ignore_on_save", None) or ())
        base._keys_to_ignore_on_save = ignored | {f"{HEAD_ATTRIBUTE}.weight"}

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], denominator: float):
        chosen, rejected = halves(sequence_rewards(model, find_head(model), batch))
        per_example, metrics = bradley_terry_loss(chosen, rejected)
        return shares(per_example, metrics, denominator)

    def save_artifacts(self, model: nn.Module, out_dir: Path) -> None:
        """reward_head.safetensors (weight [1, hidden]) and reward_head.json beside the model/adapter."""
        head = find_head(model)
        save_file({"weight": head.weight.detach().float().cpu().contiguous()}, str(Path(out_dir) / HEAD_FILE))
        (Path(out_dir) / HEAD_CONFIG).write_text(json.dumps(
            {"format": "strop-reward-head/1", "hidden_size": head.in_features, "pooling": "last_token",
             "hidden": "final normed hidden state of the decoder"}, indent=1))
