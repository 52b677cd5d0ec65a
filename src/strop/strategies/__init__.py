"""Update strategies: how the weights change. One module per strategy, registered here.

A strategy prepares a loaded model for training (freezing, adding adapter layers) and saves the final
artifact in the format other tools read. It never asks which objective is being trained. NEFTune
(`neftune_noise_alpha`) and a 4-bit base (`load_in_4bit`) compose with strategies through base.py.
"""

from __future__ import annotations

from strop.strategies.base import Strategy
from strop.strategies.bitfit import BitFitStrategy
from strop.strategies.bottleneck import HoulsbyStrategy, PfeifferStrategy
from strop.strategies.full import FullStrategy
from strop.strategies.galore import GaLoreStrategy
from strop.strategies.ia3 import IA3Strategy
from strop.strategies.lisa import LisaStrategy
from strop.strategies.lora import DoraStrategy, LoraStrategy, RsLoraStrategy
from strop.strategies.moe_lora import MoeLoraStrategy
from strop.strategies.prompt import PrefixTuningStrategy, PromptTuningStrategy, PTuningV2Strategy
from strop.strategies.qlora import QLoraStrategy
from strop.strategies.spectrum import SpectrumStrategy
from strop.strategies.spider import SpiderStrategy

STRATEGIES: dict[str, Strategy] = {
    "full": FullStrategy(),
    "lora": LoraStrategy(),
    "qlora": QLoraStrategy(),
    "dora": DoraStrategy(),
    "rslora": RsLoraStrategy(),
    "ia3": IA3Strategy(),
    "prompt_tuning": PromptTuningStrategy(),
    "prefix_tuning": PrefixTuningStrategy(),
    "p_tuning_v2": PTuningV2Strategy(),
    "bitfit": BitFitStrategy(),
    "galore": GaLoreStrategy(),
    "spectrum": SpectrumStrategy(),
    "lisa": LisaStrategy(),
    "moe_lora": MoeLoraStrategy(),
    "spider": SpiderStrategy(),
    "houlsby": HoulsbyStrategy(),
    "pfeiffer": PfeifferStrategy(),
}


def get_strategy(name: str) -> Strategy:
    return STRATEGIES[name]


__all__ = ["STRATEGIES", "Strategy", "get_strategy"]
