"""The default optimizer of every strategy without its own update rule: AdamW, with 8-bit (or 4-bit)
states when Axolotl's optimizer names ask for them."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

from strop.errors import StropError
from strop.run_types import RunConfig

#: Axolotl's optimizer names with 8-bit (or 4-bit) states → (package, class). Block-wise quantized
#: Adam states (Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization") take 2 bytes per
#: parameter instead of AdamW's 8; "paged" keeps them in CUDA unified memory (plain on the CPU).
LOW_BIT_ADAMW = {
    "adamw_bnb_8bit": ("bitsandbytes", "AdamW8bit"),
    "adamw_8bit": ("bitsandbytes", "AdamW8bit"),
    "paged_adamw_8bit": ("bitsandbytes", "PagedAdamW8bit"),
    "paged_adamw_32bit": ("bitsandbytes", "PagedAdamW32bit"),
    "adamw_torch_8bit": ("torchao", "AdamW8bit"),
    "adamw_torch_4bit": ("torchao", "AdamW4bit"),
}


def _low_bit_class(name: str) -> Callable[..., torch.optim.Optimizer]:
    package, cls = LOW_BIT_ADAMW[name]
    try:
        module = importlib.import_module(f"{package}.optim")
    except ImportError as err:
        raise StropError(f"optimizer: {name} needs {package}: pip install {package} (or use adamw_torch)") from err
    return getattr(module, cls)


def build_optimizer(params: list[torch.nn.Parameter], cfg: RunConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; the fused CUDA kernel where the device has it (one launch for all parameters); 8-bit /
    4-bit states through bitsandbytes or torchao when the optimizer name asks for them."""
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    betas, eps = (cfg.adam_beta1, cfg.adam_beta2), cfg.adam_epsilon
    if cfg.optimizer in LOW_BIT_ADAMW:
        return _low_bit_class(cfg.optimizer)(groups, lr=cfg.learning_rate, betas=betas, eps=eps)
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=betas, eps=eps, fused=fused)
