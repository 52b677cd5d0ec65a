"""SPIDER-style selective updating (from the survey's literature review): full fine-tuning in which each
weight tensor updates only a budgeted share of its elements, chosen by two per-parameter importances,

    generalisation   G = |w0|                        (magnitude of the pre-trained weight)
    task             T = Σ_{warm-up steps} g²         (squared gradients accumulated over a warm-up window)

Elements important for generalisation are consolidated (frozen at w0) and those important for the task
are updated: within each tensor of n elements both scores become ranks scaled to [0, 1], and the
k = round(spider_update_share · n) elements with the largest rank(T) − rank(G) are updated, every other
element is frozen. Per-tensor budgets keep the share exact in every tensor (and so overall, up to
rounding) and keep one tensor's gradient scale from taking the whole budget.

The first `spider_warmup_steps` optimizer steps only measure T: their gradients are recorded and then
dropped, so nothing moves before the masks exist and the frozen elements stay bit-identical to w0 for
the whole run. Afterwards each gradient is masked as it accumulates (before clipping, so the clip sees
only what updates), and weight decay is applied through the mask (AdamW's decoupled decay p ← p − lr·λ·p,
computed here and only where the mask is on; the optimizer's own decay is off). Adam's moments of a
frozen element stay zero, so its update is exactly zero.

Resumable: the masks are written to `spider_mask.safetensors` in output_dir when the warm-up ends and
read back by a run resumed after it (a run resumed inside the window measures T over its remaining
steps). Memory beyond full fine-tuning: one byte of mask per parameter, plus 4 bytes per parameter for T
during the warm-up. The artifact is a complete HF model folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import torch
from pydantic import Field
from torch import nn

from strop import manifest
from strop.errors import StropError
from strop.models.shapes import Shapes
from strop.run_types import RunConfig
from strop.strategies.base import StrategyParams
from strop.strategies.full import FullStrategy

MASK_FILE = "spider_mask.safetensors"


class SpiderParams(StrategyParams):
    spider_update_share: float = Field(
        0.1,
        gt=0,
        le=1,
        description="(spider) Budget: share of each weight tensor's elements that train; the rest stay at their pre-trained values.",
    )
    spider_warmup_steps: int = Field(
        4,
        gt=0,
        description="(spider) Optimizer steps that only accumulate squared gradients (task importance); nothing updates during them.",
    )


def budget(numel: int, share: float) -> int:
    """Elements of a tensor of `numel` that update under `share` (at least one)."""
    return max(1, round(share * numel))


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks of the flattened values scaled to [0, 1] (0: smallest)."""
    flat = values.flatten().float()
    ranks = torch.empty_like(flat)
    ranks[flat.argsort()] = torch.arange(flat.numel(), device=flat.device, dtype=flat.dtype)
    return ranks / max(1, flat.numel() - 1)


def select(weight: torch.Tensor, task: torch.Tensor, share: float) -> torch.Tensor:
    """Boolean mask of `weight`'s shape: the budgeted elements with the largest rank(T) − rank(|w0|)."""
    score = _ranks(task) - _ranks(weight.detach().abs())
    mask = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    mask[score.topk(budget(score.numel(), share)).indices] = True
    return mask.view(weight.shape)


def _masking(mask: torch.Tensor):
    """A post-accumulate-grad hook that zeroes the gradient outside `mask` (idempotent over micro-batches)."""

    def hook(param: torch.Tensor) -> None:
        if param.grad is not None:
            param.grad.mul_(mask)

    return hook


class SpiderState:
    """What one run's SPIDER keeps: its parameters, the accumulated importance, then the masks."""

    def __init__(self, params: dict[str, nn.Parameter], cfg: RunConfig):
        self.params, self.cfg, self.step, self.recorded = params, cfg, 0, 0
        self.task: dict[str, torch.Tensor] = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
        self.masks: dict[str, torch.Tensor] | None = None
        self.decay: dict[str, float] = {}

    @property
    def warming_up(self) -> bool:
        return self.step < self.cfg.spider_warmup_steps

    def record(self) -> None:
        """Warm-up: add each gradient's square to T, then drop the gradient (nothing updates)."""
        for name, param in self.params.items():
            if param.grad is not None:
                self.task[name] += param.grad.detach().float().pow(2)
                param.grad = None
        self.recorded += 1

    def build_masks(self) -> None:
        self.masks = {name: select(p, self.task[name], self.cfg.spider_update_share) for name, p in self.params.items()}
        self.task = {}
        path = Path(self.cfg.output_dir) / MASK_FILE
        if path.parent.is_dir():
            from safetensors.torch import save_file

            manifest.claim(path)
            save_file({n: m.to(torch.uint8).cpu().contiguous() for n, m in self.masks.items()}, str(path))
        self._hook_masks()

    def load_masks(self) -> None:
        """A run resumed after the warm-up: the masks its first part chose."""
        from safetensors.torch import load_file

        path = Path(self.cfg.output_dir) / MASK_FILE
        if not path.is_file():
            raise StropError(
                f"spider: resuming at step {self.step}, after the {self.cfg.spider_warmup_steps}-step warm-up, "
                f"needs the masks that warm-up chose, and {path} is missing; start the run again with --overwrite"
            )
        saved = load_file(str(path))
        if set(saved) != set(self.params):
            raise StropError(f"{path}: its tensors do not match this model's parameters (written by another run?)")
        self.masks = {n: saved[n].to(device=p.device, dtype=torch.bool) for n, p in self.params.items()}
        self.task = {}
        self._hook_masks()

    def _hook_masks(self) -> None:
        assert self.masks is not None
        for name, param in self.params.items():
            param.register_post_accumulate_grad_hook(_masking(self.masks[name]))

    @torch.no_grad()
    def before_step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer step pre-hook: record during the warm-up, else decay the masked weights."""
        if self.warming_up:
            self.record()
            return
        assert self.masks is not None
        lr = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
        for name, param in self.params.items():
            rate = self.decay.get(name, 0.0) * lr.get(id(param), 0.0)
            if rate and param.grad is not None:
                param.sub_(param * self.masks[name], alpha=rate)


def _state(model: nn.Module) -> SpiderState:
    return cast(SpiderState, model.__dict__["_strop_spider"])


class SpiderStrategy(FullStrategy):
    name = "spider"
    params = SpiderParams
    fsdp_unsupported = "SPIDER ranks and masks whole weight tensors, which FSDP shards"

    def trainable_estimate(self, cfg: RunConfig, shapes: Shapes) -> int:
        """Every parameter has a gradient and AdamW moments (the mask zeroes updates, not storage)."""
        return shapes.total

    def weight_bytes_estimate(self, cfg: RunConfig, shapes: Shapes, trainable: int) -> float:
        """Full fine-tuning's, plus a one-byte mask and, during the warm-up, a float32 importance per parameter."""
        return super().weight_bytes_estimate(cfg, shapes, trainable) + 5 * shapes.total

    def describe(self, cfg: RunConfig) -> str:
        return f"updates {cfg.spider_update_share:.1%} of each tensor, chosen after a {cfg.spider_warmup_steps}-step warm-up"

    def count_parameters(self, model: nn.Module) -> tuple[int, int]:
        """(elements that update under the budget, total)."""
        state: SpiderState | None = getattr(model, "_strop_spider", None)
        share = state.cfg.spider_update_share if state else 1.0
        params = list(model.parameters())
        return sum(budget(p.numel(), share) for p in params), sum(p.numel() for p in params)

    def adapt(self, model: nn.Module, cfg: RunConfig) -> nn.Module:
        model = super().adapt(model, cfg)
        model._strop_spider = SpiderState(dict(model.named_parameters()), cfg)  # type: ignore[assignment]
        return model

    def build_optimizer(self, model: nn.Module, cfg: RunConfig, device: torch.device) -> torch.optim.Optimizer:
        """The usual optimizer with its own weight decay off for the pre-trained weights (`before_step`
        decays them through the mask). Modules an objective adds before the optimizer (a reward or value
        head) have no pre-trained values to consolidate: they train whole, with the usual decay."""
        from strop.strategies.optim import build_optimizer

        state = _state(model)
        state.decay = {n: cfg.weight_decay for n, p in state.params.items() if p.ndim >= 2}
        optimizer = build_optimizer(list(state.params.values()), cfg.model_copy(update={"weight_decay": 0.0}), device)
        masked = {id(p) for p in state.params.values()}
        added = [p for p in self.trainable_parameters(model).values() if id(p) not in masked]
        for group in ([p for p in added if p.ndim >= 2], cfg.weight_decay), ([p for p in added if p.ndim < 2], 0.0):
            if group[0]:
                optimizer.add_param_group({"params": group[0], "weight_decay": group[1]})
        return optimizer

    def attach_optimizer(self, model: nn.Module, optimizer: torch.optim.Optimizer, cfg: RunConfig) -> None:
        super().attach_optimizer(model, optimizer, cfg)
        state = _state(model)
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: state.before_step(opt))

    def on_step_start(self, model: nn.Module, step: int, cfg: RunConfig) -> None:
        state = _state(model)
        state.step = step
        if state.masks is None and not state.warming_up:
            if state.recorded:  # this process measured T over (part of) the warm-up
                state.build_masks()
            else:  # resumed after the warm-up
                state.load_masks()
