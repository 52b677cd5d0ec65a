"""LoRA (Hu et al. 2021): W' = W + (alpha / r) · B A with A ∈ R^{r×d_in}, B ∈ R^{d_out×r}, B = 0 at start.

Built on PEFT's layers so that the saved adapter (adapter_config.json + adapter_model.safetensors) is
the format vLLM, TGI, llama.cpp's converter and `peft.PeftModel.from_pretrained` read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from torch import nn

from strop.strategies.base import Strategy


class LoraParams(BaseModel):
    lora_r: int = Field(8, gt=0, description="LoRA rank.")
    lora_alpha: float = Field(16, gt=0, description="LoRA scaling numerator: the update is scaled by lora_alpha / lora_r.")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    lora_target_modules: list[str] | Literal["all-linear"] = Field("all-linear", description="Module names to adapt, or all-linear.")


class LoraStrategy(Strategy):
    name = "lora"
    params = LoraParams

    def peft_config(self, cfg):
        from peft import LoraConfig

        return LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=cfg.lora_target_modules,
            task_type="CAUSAL_LM",
        )

    def apply(self, model: nn.Module, cfg) -> nn.Module:
        from peft import get_peft_model

        return get_peft_model(model, self.peft_config(cfg))

    def base_model(self, model: nn.Module) -> nn.Module:
        return model.get_base_model()

    def save(self, model: nn.Module, tokenizer, out_dir: Path) -> None:
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
