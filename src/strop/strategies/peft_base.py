"""What the PEFT-backed strategies (LoRA family, IA3, prompt and prefix tuning) share: the base stays
frozen (so it may be 4-bit), and the artifact is PEFT's adapter folder (adapter_config.json +
adapter_model.safetensors) that `peft.PeftModel.from_pretrained`, vLLM and TGI read."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from torch import nn

from strop.errors import StropError
from strop.run_types import RunConfig
from strop.strategies.base import Strategy, write_quantization_note
from strop.strategies.layers import check_target_modules
from strop.vlm.models import restrict_adapter_to_language


class PeftStrategy(Strategy):
    supports_quantized_base = True
    artifact_kind = "adapter (PEFT format)"
    saves_trainable_only = True
    adds_parameters = True
    #: The config key that lists module names to adapt, checked against the model before PEFT sees it.
    target_key: str | None = None

    def peft_config(self, cfg: RunConfig):
        raise NotImplementedError

    def adapt(self, model: nn.Module, cfg: RunConfig) -> nn.Module:
        from peft import PeftModel, get_peft_model

        if getattr(cfg, "lora_model_dir", None):  # Axolotl's key: continue training an existing adapter
            folder = Path(cfg.lora_model_dir)
            if not (folder / "adapter_config.json").is_file():
                raise StropError(f"lora_model_dir: {folder} has no adapter_config.json (not a PEFT adapter folder)")
            return PeftModel.from_pretrained(model, str(folder), is_trainable=True)
        if self.target_key:
            check_target_modules(model, getattr(cfg, self.target_key, None), self.target_key)
        config = self.peft_config_for(model, cfg)
        restrict_adapter_to_language(model, config, cfg)
        return get_peft_model(model, config)

    def peft_config_for(self, model: nn.Module, cfg: RunConfig):
        """The PEFT config for this model (the LoRA family makes its targets expert-aware on MoE models)."""
        return self.peft_config(cfg)

    def base_model(self, model: nn.Module) -> nn.Module:
        return model.get_base_model()

    def reference_context(self, model: nn.Module) -> AbstractContextManager:
        """The adapter switched off: the frozen base is the reference, with no second copy."""
        return model.disable_adapter()

    def kernel_options(self, cfg: RunConfig):
        """Every kernel; the frozen base may be stored in bf16, since only the adapter is saved."""
        from strop.kernels import KernelOptions

        return KernelOptions()

    def save(self, model: nn.Module, tokenizer, out_dir: Path) -> None:
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
        write_quantization_note(model, out_dir)
