"""Expert-aware LoRA: which parts of an MoE model the LoRA family adapts (`moe_lora_targets`).

    attention       every linear layer outside the MoE blocks (attention; and the dense MLPs of layers
                    without experts, as in DeepSeek's first layers); the LM head stays frozen
    shared_experts  the linear layers of the always-on shared experts (Qwen2-MoE, DeepSeek)
    experts         every routed expert. transformers 5.x fuses them into 3-D parameters (E × out × in),
                    which are not nn.Linear: PEFT's `target_parameters` puts one rank-r LoRA pair per
                    expert on them (ParamWrapper); 4.x's per-expert nn.Linear layers are plain targets
    router          trained fully (PEFT `modules_to_save`): it is only E × h, and a low-rank update of a
                    rank-E matrix saves nothing

The default (attention + shared experts) leaves routing untouched: a LoRA on a router or on the experts
can shift load, which the router losses and health metrics then have to watch.
"""

from __future__ import annotations

from torch import nn

from strop.errors import StropError
from strop.moe.detect import MoeBlock, fused_experts, moe_blocks
from strop.run_types import RunConfig


def _linear_names(module: nn.Module, prefix: str) -> list[str]:
    return [
        f"{prefix}.{name}" if prefix else name
        for name, child in module.named_modules()
        if isinstance(child, nn.Linear) or type(child).__name__ == "Linear4bit"
    ]


def _inside(name: str, blocks: list[MoeBlock]) -> bool:
    return any(name.startswith(block.name + ".") for block in blocks)


def lora_selection(model: nn.Module, parts: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(target_modules, target_parameters, modules_to_save) as full module/parameter names."""
    blocks = moe_blocks(model)
    modules: list[str] = []
    parameters: list[str] = []
    save: list[str] = []
    if "attention" in parts:
        modules += [n for n in _linear_names(model, "") if not _inside(n, blocks) and not n.endswith("lm_head")]
    for block in blocks:
        if "shared_experts" in parts and block.shared is not None:
            shared = next(n for n, m in model.named_modules() if m is block.shared)
            modules += _linear_names(block.shared, shared)
        if "experts" in parts:
            if fused_experts(block):
                parameters += [
                    f"{block.name}.experts.{p}"
                    for p in ("gate_up_proj", "down_proj")
                    if isinstance(getattr(block.experts, p, None), nn.Parameter)
                ]
            else:
                modules += _linear_names(block.experts, f"{block.name}.experts")
        if "router" in parts:
            save.append(next(n for n, m in model.named_modules() if m is block.router))
    return modules, parameters, save


def apply_moe_targets(model: nn.Module, cfg: RunConfig, lora_config, use_dora: bool) -> None:
    """Set `lora_config`'s targets from `moe_lora_targets` when the model is an MoE and the targets were
    left at all-linear (an explicit `lora_target_modules` list is the user's choice and kept)."""
    if not moe_blocks(model) or cfg.lora_target_modules != "all-linear":
        return
    parts = list(cfg.moe_lora_targets)
    modules, parameters, save = lora_selection(model, parts)
    if parameters and use_dora:
        raise StropError(
            "moe_lora_targets: 'experts' with DoRA: the routed experts are fused 3-D weights, which "
            "PEFT adapts only with plain LoRA; drop 'experts' or use adapter: lora"
        )
    if not modules and not parameters:
        raise StropError(
            f"moe_lora_targets: {parts} selects no layer LoRA can adapt in {type(model).__name__}; "
            "add attention, shared_experts or experts"
        )
    lora_config.target_modules = set(modules) or None
    if parameters:
        lora_config.target_parameters = parameters
    if save:
        lora_config.modules_to_save = save
