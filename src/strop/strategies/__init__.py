"""Update strategies: how the weights change. One module per strategy, registered here.

A strategy prepares a loaded model for training (freezing, adding adapter layers) and saves the final
artifact in the format other tools read. It never asks which objective is being trained.
"""

from __future__ import annotations

from strop.strategies.base import Strategy
from strop.strategies.full import FullStrategy
from strop.strategies.lora import LoraStrategy

STRATEGIES: dict[str, Strategy] = {
    "full": FullStrategy(),
    "lora": LoraStrategy(),
}


def get_strategy(name: str) -> Strategy:
    return STRATEGIES[name]


__all__ = ["STRATEGIES", "Strategy", "get_strategy"]
