"""LoRA (Hu et al. 2021): W' = W + (alpha / r) · B A with A ∈ R^{r×d_in}, B ∈ R^{d_out×r}, B = 0 at start.

Built on PEFT's layers so that the saved adapter (adapter_config.json + adapter_model.safetensors) is
the format vLLM, TGI, llama.cpp's converter and `peft.PeftModel.from_pretrained` read.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from strop.strategies.base import Strategy


class LoraStrategy(Strategy):
    name = "lora"

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
