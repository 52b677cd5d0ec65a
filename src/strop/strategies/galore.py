"""GaLore (Zhao et al. 2024, "GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection"):
full-parameter training whose optimizer state lives in a rank-r subspace of each targeted weight's
gradient. For a targeted weight W ∈ R^{m×n} with gradient G_t:

    every T steps:  U, S, Vᵀ = SVD(G_t);  P = U[:, :r] (m×r) if m < n,  else Q = V[:, :r] (n×r)
    R_t = Pᵀ G_t  (r×n)          or   R_t = G_t Q  (m×r)        (project the smaller side to r)
    M_t = β1 M_{t-1} + (1-β1) R_t,   V_t = β2 V_{t-1} + (1-β2) R_t²,   N_t = M̂_t / (√V̂_t + ε)
    W_t = W_{t-1} - η (α · P N_t  [or α · N_t Qᵀ]) - η λ W_{t-1}

with α the GaLore scale, M̂, V̂ bias-corrected as in AdamW (torch's formula), λ decoupled weight decay.
Untargeted parameters (embeddings, norms, head, biases) get plain AdamW in the same optimizer. A target
whose rank r ≥ min(m, n) cannot be compressed and is updated by plain AdamW (no rotation): a projection
by a full orthogonal basis is lossless for the gradient but Adam's elementwise normalisation is not
rotation-invariant, so it would be a different optimizer, not a cheaper AdamW.

Under torchrun (FSDP2) each targeted weight and its gradient are sharded by rows. Every rank gathers
the whole gradient of a targeted weight (one all-gather per weight per step), computes the same SVD,
projection and low-rank moments, and applies its own rows of the projected-back update: the update of
one process. The projection and the r-sized moments are therefore replicated on every rank, not sharded
(GaLore made them small); the other parameters' AdamW state stays sharded.

Written here rather than depending on `galore-torch` because the state must be checkpointable by
strop's loop (tensors + JSON scalars in `state_dict()`): per parameter `step`, `exp_avg`,
`exp_avg_sq` and `projection` are all tensors; `rank`, `update_proj_gap`, `scale` are group scalars.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

from strop.models.shapes import Shapes
from strop.run_types import RunConfig
from strop.strategies.base import StrategyParams
from strop.strategies.full import FullStrategy
from strop.strategies.layers import check_target_modules


class GaLoreParams(StrategyParams):
    galore_rank: int = Field(128, gt=0, description="(galore) Rank r of the gradient projection.")
    galore_update_proj_gap: int = Field(
        200, gt=0, description="(galore) T: recompute the projection (SVD of the gradient) every T steps."
    )
    galore_scale: float = Field(0.25, gt=0, description="(galore) α: scale of the projected-back update.")
    galore_target_modules: list[str] = Field(
        ["attn", "mlp"], description="(galore) Linear layers whose name contains one of these get projected updates."
    )


def compute_projection(grad: torch.Tensor, rank: int) -> torch.Tensor:
    """P = U[:, :r] (m×r) when m < n, else Q = V[:, :r] (n×r), from the SVD of the gradient."""
    u, _, vh = torch.linalg.svd(grad.float(), full_matrices=False)
    return u[:, :rank].contiguous() if grad.shape[0] < grad.shape[1] else vh[:rank].t().contiguous()


def project(grad: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    return projection.t() @ grad if grad.shape[0] < grad.shape[1] else grad @ projection


def project_back(low: torch.Tensor, projection: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return projection @ low if shape[0] < shape[1] else low @ projection.t()


class GaLoreAdamW(torch.optim.Optimizer):
    """AdamW; groups with a `rank` key get GaLore's projected update for their 2-D parameters."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "rank": None,
            "update_proj_gap": 200,
            "scale": 1.0,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group)
        return loss

    def _update(self, param: torch.Tensor, group: dict) -> None:
        grad, state = param.grad.float(), self.state[param]
        beta1, beta2 = group["betas"]
        rank = group["rank"]
        low_rank = rank is not None and grad.dim() == 2 and rank < min(grad.shape)
        if low_rank and isinstance(grad, DTensor):  # FSDP2: the whole gradient, on every rank
            grad = grad.full_tensor()
        if not state:
            state["step"] = torch.tensor(0.0)
        state["step"] += 1
        t = int(state["step"].item())
        if low_rank:
            if "projection" not in state or (t - 1) % group["update_proj_gap"] == 0:
                state["projection"] = compute_projection(grad, rank)
            grad = project(grad, state["projection"])
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(grad)
            state["exp_avg_sq"] = torch.zeros_like(grad)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**t)).add_(group["eps"])
        update = exp_avg / (1 - beta1**t) / denom
        if low_rank:
            update = project_back(update, state["projection"], param.shape) * group["scale"]
            if isinstance(param, DTensor):  # this rank's shard of the whole update (no communication)
                update = distribute_tensor(update, param.device_mesh, param.placements, src_data_rank=None)
        if group["weight_decay"]:
            param.mul_(1 - group["lr"] * group["weight_decay"])
        param.add_(update.to(param.dtype), alpha=-group["lr"])


def galore_targets(model: nn.Module, targets: list[str]) -> set[str]:
    """Names of the 2-D weights of linear layers whose module name contains one of `targets`."""
    return {
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and any(t in name for t in targets)
    }


def galore_param_groups(model: nn.Module, cfg: RunConfig) -> list[dict]:
    check_target_modules(
        model, cfg.galore_target_modules, "galore_target_modules", lambda name, target: target in name, linear_only=True
    )
    targets = galore_targets(model, cfg.galore_target_modules)
    projected: list[nn.Parameter] = []
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (projected if name in targets else decay if param.ndim >= 2 else no_decay).append(param)
    groups = [
        {
            "params": projected,
            "weight_decay": cfg.weight_decay,
            "rank": cfg.galore_rank,
            "update_proj_gap": cfg.galore_update_proj_gap,
            "scale": cfg.galore_scale,
        },
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


class GaLoreStrategy(FullStrategy):
    name = "galore"
    params = GaLoreParams
    supports_bf16_masters = False  # its own optimizer projects fp32 gradients

    def optimizer_bytes_estimate(self, cfg: RunConfig, shapes: Shapes, trainable: int) -> float:
        """For a targeted m×n weight, moments of the projected gradient, 2·r·max(m, n), plus the r·min(m, n)
        projection; AdamW's two moments for every other parameter."""
        targets = [t for t in shapes.linears if any(k in t[0] for k in cfg.galore_target_modules)]
        projected, states = 0, 0
        for _, i, o in targets:  # weight is o×i
            r = min(cfg.galore_rank, i, o)
            projected += i * o
            states += (2 * r * max(i, o) + r * min(i, o)) if r < min(i, o) else 2 * i * o
        return 4 * (states + 2 * (shapes.total - projected))

    def build_optimizer(self, model: nn.Module, cfg: RunConfig, device: torch.device) -> torch.optim.Optimizer:
        return GaLoreAdamW(
            galore_param_groups(model, cfg),
            lr=cfg.learning_rate,
            betas=(cfg.adam_beta1, cfg.adam_beta2),
            eps=cfg.adam_epsilon,
        )

    def describe(self, cfg: RunConfig) -> str:
        return (
            f"rank={cfg.galore_rank} T={cfg.galore_update_proj_gap} scale={cfg.galore_scale} "
            f"targets={cfg.galore_target_modules}"
        )
