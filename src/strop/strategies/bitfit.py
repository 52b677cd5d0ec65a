"""BitFit (Ben Zaken et al. 2021, "BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based
Masked Language-models"): train only the bias terms, freeze every weight matrix.

Only meaningful on architectures with biases (GPT-2, Qwen2's q/k/v projections, Phi, BLOOM, ...). Llama,
Mistral and SmolLM2 have none, and training nothing would be a silent no-op, so that is refused with a
clear error. The artifact is a complete HF model folder, like full fine-tuning.
"""

from __future__ import annotations

from torch import nn

from strop.errors import StropError
from strop.models.shapes import Shapes
from strop.run_types import RunConfig
from strop.strategies.full import FullStrategy


def bias_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_parameters() if name.endswith(".bias") or name == "bias"]


class BitFitStrategy(FullStrategy):
    name = "bitfit"

    def trainable_estimate(self, cfg: RunConfig, shapes: Shapes) -> int:
        return shapes.biases

    def adapt(self, model: nn.Module, cfg: RunConfig) -> nn.Module:
        biases = set(bias_names(model))
        if not biases:
            arch = ", ".join(getattr(model.config, "architectures", None) or [type(model).__name__])
            raise StropError(
                f"adapter: bitfit trains only bias terms, and this model ({arch}) has no biases "
                "(Llama, Mistral and SmolLM2 linear layers have none). Use a model with biases "
                "(e.g. Qwen2, GPT-2, Phi) or another strategy such as lora."
            )
        for name, param in model.named_parameters():
            param.requires_grad_(name in biases)
        return model
