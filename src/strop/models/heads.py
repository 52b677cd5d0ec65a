"""Linear heads that objectives attach to a causal LM: the reward head (`rl: reward`) and PPO's value head.

A head is set as a submodule of the underlying transformers model, so it is trainable, optimized and
checkpointed with the rest under any strategy, while `_keys_to_ignore_on_save` keeps it out of
model.safetensors: the saved model stays an ordinary causal LM and the head is saved beside it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from strop.errors import StropError

HEAD_FILE, HEAD_CONFIG = "reward_head.safetensors", "reward_head.json"
HEAD_ATTRIBUTE = "strop_reward_head"
VALUE_HEAD_FILE = "value_head.safetensors"
VALUE_HEAD_ATTRIBUTE = "strop_value_head"


class RewardHead(nn.Linear):
    """hidden → 1, float32."""

    def __init__(self, hidden_size: int, init_std: float = 0.02):
        super().__init__(hidden_size, 1, bias=False, dtype=torch.float32)
        nn.init.normal_(self.weight, std=init_std)


class ValueHead(nn.Linear):
    """hidden → 1 with a bias, float32, starting at zero (no opinion before the first update)."""

    def __init__(self, hidden_size: int):
        super().__init__(hidden_size, 1, bias=True, dtype=torch.float32)
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)


def attach_head(base: nn.Module, attribute: str, head: nn.Module) -> nn.Module:
    """`head` as `base.<attribute>`, unless a head of its type is already there (a resumed run); the
    attached head either way. Its parameters are kept out of the saved model."""
    present = getattr(base, attribute, None)
    if isinstance(present, type(head)):
        return present
    setattr(base, attribute, head)
    names = {f"{attribute}.{name}" for name, _ in head.named_parameters()}
    ignored = set(getattr(base, "_keys_to_ignore_on_save", None) or ()) | names
    base._keys_to_ignore_on_save = ignored  # type: ignore[assignment]
    return head


def last_token_hidden(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Final (normed) hidden state at each right-padded sequence's last real token, without the LM head."""
    decoder = model.get_decoder()
    hidden = decoder(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).last_hidden_state
    last = batch["attention_mask"].sum(dim=1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def sequence_rewards(model: nn.Module, head: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return head(last_token_hidden(model, batch).float()).squeeze(-1)


def find_head(model: nn.Module) -> RewardHead:
    head = next((m for m in model.modules() if isinstance(m, RewardHead)), None)
    if head is None:
        raise RuntimeError("the reward head is not attached: call objective.prepare_training(run) first")
    return head


def load_reward_head(folder: Path, device: torch.device) -> RewardHead:
    """The reward head saved beside a reward model (reward_head.safetensors, weight [1, hidden])."""
    path = Path(folder) / HEAD_FILE
    if not path.is_file():
        raise StropError(f"{folder}: no {HEAD_FILE}: not a reward model trained with rl: reward")
    weight = load_file(str(path))["weight"]
    head = RewardHead(weight.shape[1]).to(device)
    head.weight.data.copy_(weight)
    return head
