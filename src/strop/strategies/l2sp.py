"""L2-SP (Li, Grandvalet & Davoine 2018, "Explicit Inductive Bias for Transfer Learning with
Convolutional Networks"): continual fine-tuning that forgets less by pulling the trained weights toward
their starting point w0 instead of toward zero,

    Ω(w) = α/2 · ||w − w0||²     over the trained parameters,   ∇Ω = α · (w − w0).

Added as its gradient to each trained parameter's gradient just before the optimizer step (an optimizer
step pre-hook), so no objective needs to know about it and it counts once per optimizer step whatever
the gradient accumulation. Like decoupled weight decay, the pull is added after gradient clipping and
is not clipped itself. It only means something where the base weights themselves train (full, spectrum,
lisa, bitfit, galore, spider): an adapter's own weights start at zero or identity, where the same
penalty is plain weight decay. Memory: one copy of every trained parameter (4 bytes each in float32).
"""

from __future__ import annotations

import torch

from strop.errors import StropError
from strop.run_types import RunConfig


def check_l2sp(strategy, cfg: RunConfig) -> None:
    """A StropError when `l2sp_alpha` is set on a strategy that keeps the base weights frozen."""
    if getattr(cfg, "l2sp_alpha", None) and strategy.supports_quantized_base:
        raise StropError(
            f"l2sp_alpha: L2-SP pulls trained base weights back toward their pre-trained values, and the "
            f"'{strategy.name}' strategy keeps the base frozen (its adapter starts at zero or identity, where "
            "the same pull is plain weight decay); use weight_decay, or a strategy that trains the base "
            "(full, spectrum, lisa, bitfit, galore, spider)"
        )


def install_l2sp(optimizer: torch.optim.Optimizer, alpha: float):
    """Snapshot w0 for every parameter `optimizer` steps, and add α(w − w0) to its gradient before each
    step. Call before any checkpoint is resumed into the model, so that w0 is the base. Returns the
    hook's handle."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    anchors = [p.detach().clone() for p in params]

    @torch.no_grad()
    def pull(opt, args, kwargs) -> None:
        pairs = [(p, a) for p, a in zip(params, anchors, strict=True) if p.grad is not None]
        for param, anchor in pairs:
            param.grad.add_(param.detach() - anchor, alpha=alpha)

    return optimizer.register_step_pre_hook(pull)
