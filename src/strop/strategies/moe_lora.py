"""`adapter: moe_lora`: several LoRA experts per targeted linear layer with a learned top-k router
(MoELoRA / MixLoRA on a dense model); the layer and its math are in strop/moe/lora_experts.py.

The artifact is strop's own (moe_lora_config.json + moe_lora.safetensors, loaded back with
`strop.moe.lora_experts.load`): PEFT has no routed-LoRA layer. With moe_lora_top_k equal to the number
of experts (or 0) the adapter is a fixed low-rank update and `lora_experts.merge` folds it into the model.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from pydantic import Field
from torch import nn

from strop.models.shapes import Shapes, linear_targets
from strop.moe import lora_experts
from strop.run_types import RunConfig
from strop.strategies.base import Strategy
from strop.strategies.layers import check_target_modules
from strop.strategies.lora import LoraParams


class MoeLoraParams(LoraParams):
    moe_lora_experts: int = Field(4, ge=1, description="(moe_lora) LoRA experts per targeted linear layer.")
    moe_lora_top_k: int = Field(
        2,
        ge=0,
        description="(moe_lora) Experts each token uses, chosen by a learned router; "
        "0 or moe_lora_experts: all, with no router (merges into the model).",
    )


class MoeLoraStrategy(Strategy):
    name = "moe_lora"
    params = MoeLoraParams
    supports_quantized_base = True
    saves_trainable_only = True
    artifact_kind = "LoRA experts (strop moe_lora format)"

    def trainable_estimate(self, cfg: RunConfig, shapes: Shapes) -> int:
        """E LoRA pairs per target, plus an E × in router unless every expert is on."""
        experts, k = cfg.moe_lora_experts, cfg.moe_lora_top_k
        routed = 0 < k < experts
        return sum(
            experts * cfg.lora_r * (i + o) + (experts * i if routed else 0)
            for _, i, o in linear_targets(shapes, cfg.lora_target_modules)
        )

    def adapt(self, model: nn.Module, cfg: RunConfig) -> nn.Module:
        check_target_modules(model, cfg.lora_target_modules, "lora_target_modules")
        model.requires_grad_(False)
        lora_experts.add_lora_experts(
            model,
            cfg.lora_target_modules,
            cfg.moe_lora_experts,
            min(cfg.moe_lora_top_k, cfg.moe_lora_experts),
            cfg.lora_r,
            cfg.lora_alpha,
            cfg.lora_dropout,
        )
        model._strop_base_path = cfg.base_model  # type: ignore[assignment]  # mypy types module attributes as Tensor | Module
        return model

    def reference_context(self, model: nn.Module) -> AbstractContextManager:
        """The LoRA experts switched off: the frozen base is the reference policy."""
        return lora_experts.adapters_disabled(model)

    def kernel_options(self, cfg: RunConfig):
        return None  # strop's fused LoRA kernels know PEFT's layers, not these

    def describe(self, cfg: RunConfig) -> str:
        k = cfg.moe_lora_top_k if 0 < cfg.moe_lora_top_k < cfg.moe_lora_experts else cfg.moe_lora_experts
        return f"{cfg.moe_lora_experts} LoRA experts (top-{k}) r={cfg.lora_r} alpha={cfg.lora_alpha} targets={cfg.lora_target_modules}"

    def save(self, model: nn.Module, tokenizer, out_dir: Path) -> None:
        lora_experts.save(model, out_dir, getattr(model, "_strop_base_path", ""))
        tokenizer.save_pretrained(out_dir)
