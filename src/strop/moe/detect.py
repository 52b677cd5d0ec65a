"""Find the sparse MoE blocks of a transformers model, whatever its family.

transformers 5.x stores a block's experts fused (`experts.gate_up_proj` of shape E × 2f × h and
`experts.down_proj` E × h × f, nn.Parameters rather than nn.Linear) behind a `gate` router module whose
forward returns (logits, top-k weights, top-k indices); 4.x kept one nn.Linear per expert and a plain
nn.Linear `gate` returning logits. Both are found the same way: a module with an `experts` child and a
`gate` (or `router`) child is an MoE block. Shared experts (Qwen2-MoE, DeepSeek) are the
`shared_expert(s)` child.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

ROUTER_NAMES = ("gate", "router")
SHARED_NAMES = ("shared_expert", "shared_experts")


@dataclass
class MoeBlock:
    """One sparse layer: its qualified name, router, experts module, shared experts (or None)."""

    name: str
    router: nn.Module
    experts: nn.Module
    shared: nn.Module | None
    num_experts: int
    top_k: int


def router_weight(router: nn.Module) -> torch.Tensor:
    """The E × h routing matrix (fused TopKRouter or nn.Linear alike)."""
    return router.weight  # type: ignore[return-value]  # nn.Module's dynamic attribute: a Parameter here


def _top_k(block: nn.Module, router: nn.Module, config) -> int:
    for owner in (router, block):
        top_k = getattr(owner, "top_k", None)
        if isinstance(top_k, int):
            return top_k
    return int(getattr(config, "num_experts_per_tok", 2))


def moe_blocks(model: nn.Module) -> list[MoeBlock]:
    """Every MoE block of `model` in layer order (empty for a dense model)."""
    config = getattr(model, "config", None)
    blocks = []
    for name, module in model.named_modules():
        experts = getattr(module, "experts", None)
        router = next(
            (getattr(module, n) for n in ROUTER_NAMES if isinstance(getattr(module, n, None), nn.Module)), None
        )
        if not isinstance(experts, nn.Module) or router is None or getattr(router, "weight", None) is None:
            continue
        shared = next(
            (getattr(module, n) for n in SHARED_NAMES if isinstance(getattr(module, n, None), nn.Module)), None
        )
        num_experts = router_weight(router).shape[0]
        blocks.append(MoeBlock(name, router, experts, shared, num_experts, _top_k(module, router, config)))
    return blocks


def is_moe(model: nn.Module) -> bool:
    return bool(moe_blocks(model))


def fused_experts(block: MoeBlock) -> bool:
    """True where the experts are 3-D parameters (transformers 5.x) rather than one nn.Linear each."""
    return isinstance(getattr(block.experts, "gate_up_proj", None), nn.Parameter) or isinstance(
        getattr(block.experts, "down_proj", None), nn.Parameter
    )


def is_moe_config(config) -> bool:
    """True for a transformers config of a sparse MoE (read before any weight is loaded)."""
    return any(
        int(getattr(config, key, 0) or 0) > 1 for key in ("num_local_experts", "num_experts", "n_routed_experts")
    )


#: Modules a 4-bit MoE base keeps in float: the LM head (as transformers does by default) and the
#: one-output shared-expert gates, on which bitsandbytes' 4-bit matrix-vector path fails (and which
#: are h numbers each). Routers are kept too where they are nn.Linear (transformers 4.x): routing is
#: sensitive, and they are tiny.
QUANTIZATION_SKIPS = ["lm_head", "shared_expert_gate", "mlp.gate", "block_sparse_moe.gate"]
