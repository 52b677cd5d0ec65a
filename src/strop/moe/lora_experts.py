"""LoRA experts on a dense model (MoELoRA, Luo et al. 2024; MixLoRA, Li et al. 2024): each targeted linear
layer W gets E LoRA experts (A_e ∈ R^{r×in}, B_e ∈ R^{out×r}, B_e = 0 at start) and a learned router
R ∈ R^{E×in}; per token x

    y = W x + (α / r) · Σ_{e ∈ top-k(R x)} g_e(x) · B_e A_e x,     g = softmax(R x), not renormalised
                                                                     over the top-k (Switch Transformer),
                                                                     so the router learns even at k = 1

All E low-rank products are computed as two batched einsums over the stacked A and B (no Python loop over
experts: at rank r the dense E·r product is cheaper than gathering tokens per expert), then weighted by
g, which is zero outside the top-k.

With k = E (`moe_lora_top_k: 0` or E) there is no router: every expert is on with weight 1, the update is
a fixed rank-E·r matrix Σ_e B_e A_e, and `merge` folds it into W exactly. For k < E the update depends on
the token through the router, so no dense matrix equals it: strop saves the experts and router and loads
them back (`load`), and refuses to merge.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from strop.errors import StropError

CONFIG_FILE, WEIGHTS_FILE = "moe_lora_config.json", "moe_lora.safetensors"


class LoraExpertsLinear(nn.Module):
    """A frozen linear layer plus E LoRA experts and their top-k router."""

    def __init__(self, base: nn.Linear, experts: int, top_k: int, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base, self.top_k, self.scale, self.enabled = base, top_k, alpha / r, True
        device = base.weight.device
        self.lora_A = nn.Parameter(torch.empty(experts, r, base.in_features, device=device))
        self.lora_B = nn.Parameter(torch.zeros(experts, base.out_features, r, device=device))
        for e in range(experts):  # LoRA's initialisation of A (kaiming-uniform, a = √5), B = 0
            nn.init.kaiming_uniform_(self.lora_A.data[e], a=math.sqrt(5))
        self.router = nn.Linear(base.in_features, experts, bias=False, device=device) if top_k < experts else None
        if self.router is not None:
            nn.init.normal_(self.router.weight, std=0.02)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()

    def gates(self, x: torch.Tensor) -> torch.Tensor | None:
        """(…, E) routing weights, zero outside each token's top-k; None when every expert is on."""
        if self.router is None:
            return None
        probs = self.router(x).float().softmax(dim=-1)
        top, index = probs.topk(self.top_k, dim=-1)
        return torch.zeros_like(probs).scatter(-1, index, top).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if not self.enabled:
            return out
        a, b = self.lora_A.to(x.dtype), self.lora_B.to(x.dtype)
        hidden = torch.einsum("...i,eri->...er", self.dropout(x), a)
        gates = self.gates(x)
        if gates is not None:
            hidden = hidden * gates.unsqueeze(-1)
        return out + self.scale * torch.einsum("...er,eor->...o", hidden, b)

    def delta_weight(self) -> torch.Tensor:
        """The fixed update Σ_e (α/r) B_e A_e, defined only without a router (k = E)."""
        if self.router is not None:
            raise StropError(
                f"moe_lora: top-{self.top_k} of {self.lora_A.shape[0]} experts is routed per token, so "
                "no dense weight equals it; only moe_lora_top_k = all experts merges"
            )
        return self.scale * torch.einsum("eor,eri->oi", self.lora_B, self.lora_A)


def layers(model: nn.Module) -> dict[str, LoraExpertsLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraExpertsLinear)}


def _targets(model: nn.Module, targets) -> list[str]:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if targets == "all-linear":
        heads = {n for n in names if n.split(".")[-1] in ("lm_head", "score", "v_head")}
        return [n for n in names if n not in heads]
    return [n for n in names if any(n == t or n.endswith("." + t) for t in targets)]


def add_lora_experts(
    model: nn.Module, targets, experts: int, top_k: int, r: int, alpha: float, dropout: float = 0.0
) -> list[str]:
    """Replace each targeted nn.Linear of `model` in place; returns the replaced names."""
    top_k = experts if top_k in (0, experts) else top_k
    names = _targets(model, targets)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoraExpertsLinear(getattr(parent, child), experts, top_k, r, alpha, dropout))
    # a plain attribute on the module (mypy types nn.Module attributes as Tensor | Module)
    model._strop_moe_lora = {
        "targets": names,
        "experts": experts,
        "top_k": top_k,  # type: ignore[assignment]
        "r": r,
        "alpha": alpha,
        "dropout": dropout,
    }
    return names


@contextmanager
def adapters_disabled(model: nn.Module):
    """The base model alone (the reference policy of preference and RL objectives)."""
    found = list(layers(model).values())
    for layer in found:
        layer.enabled = False
    try:
        yield model
    finally:
        for layer in found:
            layer.enabled = True


def adapter_state(model: nn.Module, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The experts' and routers' tensors (from `state`, e.g. a gathered state dict, else the model's)."""
    state = model.state_dict() if state is None else state
    keep = (".lora_A", ".lora_B", ".router.weight")
    return {k: v.detach().contiguous().cpu() for k, v in state.items() if k.endswith(keep)}


def save(model: nn.Module, out_dir: Path, base_model: str) -> None:
    from safetensors.torch import save_file

    save_file(adapter_state(model), str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    settings = model._strop_moe_lora  # the dict add_lora_experts set (mypy types it as Tensor | Module)
    (out_dir / CONFIG_FILE).write_text(json.dumps({"base_model": base_model, **settings}, indent=1) + "\n")  # type: ignore[dict-item]


def load(model: nn.Module, folder: Path) -> nn.Module:
    """Put saved LoRA experts back onto a freshly loaded base `model`."""
    from safetensors.torch import load_file

    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise StropError(f"{folder}: no {CONFIG_FILE}: not a moe_lora adapter folder")
    meta = json.loads(path.read_text())
    add_lora_experts(model, meta["targets"], meta["experts"], meta["top_k"], meta["r"], meta["alpha"], meta["dropout"])
    missing, unexpected = model.load_state_dict(load_file(str(Path(folder) / WEIGHTS_FILE)), strict=False)
    if unexpected or any(k.endswith((".lora_A", ".lora_B", ".router.weight")) for k in missing):
        raise StropError(f"{folder}: {WEIGHTS_FILE} does not match {CONFIG_FILE}")
    return model


@torch.no_grad()
def merge(model: nn.Module) -> nn.Module:
    """Fold every k = E expert set into its base weight and put the plain nn.Linear back."""
    for name, layer in layers(model).items():
        layer.base.weight += layer.delta_weight().to(layer.base.weight.dtype)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer.base)
    del model._strop_moe_lora
    return model
