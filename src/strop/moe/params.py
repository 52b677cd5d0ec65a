"""The MoE config keys (flat in the YAML, like every objective's and strategy's own keys)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

LoraPart = Literal["attention", "shared_experts", "experts", "router"]


class MoeParams(BaseModel):
    moe_aux_loss_coef: float | None = Field(
        None,
        ge=0,
        description="(MoE models) Weight of the load-balancing loss E·Σ f_e·p_e (1 when balanced). Default: "
        "the model config's router_aux_loss_coef (Mixtral 0.02, Qwen-MoE 0.001), else 0.01; 0 turns it off.",
    )
    moe_z_loss_coef: float | None = Field(
        None,
        ge=0,
        description="(MoE models) Weight of the ST-MoE router z-loss, mean logsumexp(logits)². Default: the "
        "model config's router_z_loss_coef, else 0.001; 0 turns it off.",
    )
    moe_entropy_warning: float = Field(
        0.5,
        ge=0,
        le=1,
        description="(MoE models) Warn when a layer's expert-load entropy / log E falls below this "
        "(1 = balanced, 0 = one expert takes every token).",
    )
    moe_lora_targets: list[LoraPart] = Field(
        ["attention", "shared_experts"],
        description="(MoE models, LoRA family, when lora_target_modules is all-linear) "
        "what LoRA adapts: attention, shared_experts, experts (every routed expert, on the fused expert weights), "
        "router (trained fully: it is E × h). Default leaves routed experts and router frozen, which keeps routing stable.",
    )
