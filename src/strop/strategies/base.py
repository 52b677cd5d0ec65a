"""The contract every update strategy meets, and what all strategies share.

Shared by every strategy, whatever its own keys:
- `neftune_noise_alpha` (NEFTune): `Strategy.apply` calls the strategy's own `adapt`, then installs the
  NEFTune embedding hook. No strategy, no objective and not the loop need to know about it.
- `load_in_4bit` (QLoRA base): `load` quantizes the frozen base to 4-bit NF4 for strategies whose base
  stays frozen (`supports_quantized_base`); the others refuse it with a clear message.
- `l2sp_alpha` (L2-SP): `attach_optimizer` adds the pull toward the base weights (strategies/l2sp.py)
  where the base trains; strategies that keep it frozen refuse it.
- `kernels`, `kernel_checkpoint` (strop's GPU kernels): `apply` then patches the prepared model on
  CUDA (strategies/kernels.py), within what the strategy's `kernel_options` allows.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, Field
from torch import nn

from strop.errors import StropError
from strop.models.shapes import NF4_BYTES, Shapes, quantized_linear_params
from strop.run_types import RunConfig


class StrategyParams(BaseModel):
    """Keys every strategy understands (each strategy's own `params` model extends this one)."""

    neftune_noise_alpha: float | None = Field(
        None,
        ge=0,
        description="(any strategy) NEFTune: uniform noise of size alpha/sqrt(L*d) on input embeddings while training; 5 is typical.",
    )
    load_in_4bit: bool = Field(
        False,
        description="(adapter strategies) Load the frozen base in 4-bit NF4 with double quantization: QLoRA when adapter is lora.",
    )
    kernels: bool = Field(
        True,
        description="(any strategy; CUDA, one process) strop's kernels: Triton RMSNorm and SwiGLU, fused LoRA "
        "projections, chunked linear+cross-entropy SFT loss, frozen base in bf16 under bf16 autocast. "
        "No effect on the CPU; false keeps transformers' and PEFT's own forward.",
    )
    l2sp_alpha: float | None = Field(
        None,
        ge=0,
        description="(strategies that train base weights: full, spectrum, lisa, bitfit, galore, spider) L2-SP: "
        "add alpha/2 * ||w - w0||^2 over the trained weights, a pull toward the base that limits forgetting; "
        "0.01-1 is typical.",
    )
    kernel_checkpoint: Literal["auto", "gpu", "offload", "none"] = Field(
        "auto",
        description="(with kernels) auto: strop's per-layer checkpointing replaces transformers' when "
        "gradient_checkpointing is on; gpu/offload: always (offload keeps layer inputs in host "
        "memory); none: checkpointing left to gradient_checkpointing.",
    )
    master_weights: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="(full, spectrum, lisa, bitfit; adamw) fp32: float32 trainable weights, gradients and AdamW "
        "moments under bf16 autocast (16 B a parameter); bf16: weights, gradients and both moments in bf16, "
        "every update stochastically rounded so small steps still count (8 B a parameter).",
    )


def is_4bit(param: torch.Tensor) -> bool:
    return type(param).__name__ == "Params4bit"


class Strategy:
    """Base class: subclasses set `name` and override `adapt` and `save`."""

    name = "base"
    #: Pydantic model of this strategy's own config keys (flat in the YAML), or None.
    params: type[StrategyParams] = StrategyParams
    #: Trainable weights that must stay in float32 even when the frozen base is stored in bf16.
    upcast_trainable = True
    #: Whether the base stays frozen, so that it may be stored in 4-bit (load_in_4bit).
    supports_quantized_base = False
    #: Why this strategy cannot shard under FSDP2 (torchrun), or None when it can.
    fsdp_unsupported: str | None = None
    #: Whether `save` writes the trainable weights only (an adapter), so a sharded run gathers only those.
    saves_trainable_only = False
    #: What `save` writes, for the run summary.
    artifact_kind = "model (HF format)"
    #: Whether the trainable parameters are added next to the base's (adapters), for `strop estimate`.
    adds_parameters = False
    #: Whether the model's own weights train through the shared AdamW, so that `master_weights: bf16`
    #: may store them (and their gradients and moments) in bf16.
    supports_bf16_masters = False

    # `strop estimate` (strop.train.estimate) asks each strategy for its share of the memory model; the
    # defaults answer for full fine-tuning. `shapes` is a strop.models.shapes.Shapes.

    def bf16_masters(self, cfg: RunConfig) -> bool:
        """Whether this run keeps its trainable weights in bf16 (`master_weights: bf16`)."""
        return self.supports_bf16_masters and getattr(cfg, "master_weights", "fp32") == "bf16"

    def trainable_dtype_bytes(self, cfg: RunConfig) -> int:
        """Bytes of one trainable weight, its gradient, or one AdamW moment: 2 under bf16 masters, else 4."""
        return 2 if self.bf16_masters(cfg) else 4

    def trainable_estimate(self, cfg: RunConfig, shapes: Shapes) -> int:
        """Parameters this strategy trains (at any one time), from the architecture's shapes alone."""
        return shapes.total

    def trainable_from_skeleton(self, model: nn.Module, cfg: RunConfig) -> int | None:
        """The trainable count where it needs the meta-device model itself, or None to use the shapes."""
        return None

    def optimizer_bytes_estimate(self, cfg: RunConfig, shapes: Shapes, trainable: int) -> float:
        """Optimizer states: AdamW's two moments per trainable parameter (float32, or bf16 under bf16 masters)."""
        return 2 * self.trainable_dtype_bytes(cfg) * trainable

    def gradient_bytes_estimate(self, cfg: RunConfig, trainable: int) -> float:
        """One gradient per trainable parameter, in the trainable weights' dtype."""
        return self.trainable_dtype_bytes(cfg) * trainable

    def activation_bytes_per_token(self, cfg: RunConfig, shapes: Shapes) -> float:
        """Saved tensors this strategy adds per token, on top of the model's own."""
        return 0

    def quantized_base_estimate(self, cfg: RunConfig, adapter: int) -> bool:
        """Whether the estimate stores the base's linear weights in NF4 (load_in_4bit under an adapter)."""
        return bool(cfg.load_in_4bit and adapter)

    def weight_bytes_estimate(self, cfg: RunConfig, shapes: Shapes, trainable: int) -> float:
        """Float32 weights (bf16 under bf16 masters), plus the adapter's; on a 4-bit base the decoder's
        linear weights in NF4."""
        adapter = trainable if self.adds_parameters else 0
        # L2-SP's copy of w0, in the trained weights' dtype
        anchors = self.trainable_dtype_bytes(cfg) * trainable if getattr(cfg, "l2sp_alpha", None) else 0
        if self.bf16_masters(cfg):
            return 2 * (shapes.total + adapter) + anchors
        if self.quantized_base_estimate(cfg, adapter):
            quantized = quantized_linear_params(shapes)
            return quantized * NF4_BYTES + 4 * (shapes.total - quantized) + 4 * adapter + anchors
        return 4 * (shapes.total + adapter) + anchors

    def describe(self, cfg: RunConfig) -> str:
        """This strategy's settings in one line, for the plan printed before training."""
        return ""

    def load(self, model_path: str, cfg: RunConfig, device: torch.device) -> nn.Module:
        """Load the base model; strategies that quantize or shard the base override this."""
        if getattr(cfg, "load_in_8bit", False) and not getattr(cfg, "load_in_4bit", False) and self.name != "qlora":
            if not self.supports_quantized_base:
                raise StropError(
                    f"load_in_8bit: the '{self.name}' strategy trains the base weights themselves, so "
                    "they cannot be stored in 8-bit; use an adapter (lora, dora, ia3, ...) or drop load_in_8bit"
                )
            from strop.models.quantized import load_4bit

            return load_4bit(model_path, cfg, device, eight_bit=True)
        if getattr(cfg, "load_in_4bit", False):
            if not self.supports_quantized_base:
                raise StropError(
                    f"load_in_4bit: the '{self.name}' strategy trains the base weights themselves, so "
                    "they cannot be stored in 4-bit; use an adapter (lora, qlora, dora, ia3, ...) or drop load_in_4bit"
                )
            from strop.models.quantized import load_4bit
            from strop.strategies.kernels import load_dtype

            return load_4bit(model_path, cfg, device, dtype=load_dtype(self, cfg, device))
        from strop.models import load_model
        from strop.strategies.kernels import load_dtype

        dtype = load_dtype(self, cfg, device)
        return load_model(model_path, dtype, cfg.trust_remote_code, cfg.model_type).to(device)

    def apply(self, model: nn.Module, cfg: RunConfig) -> nn.Module:
        """The model as this run trains it: the strategy's own `adapt`, then what every strategy shares,
        installed after the strategy's layers are in place: the NEFTune hook and strop's kernels."""
        from strop.strategies.kernels import install_kernels
        from strop.strategies.l2sp import check_l2sp
        from strop.strategies.neftune import install_neftune

        check_l2sp(self, cfg)
        model = self.adapt(model, cfg)
        install_neftune(model, getattr(cfg, "neftune_noise_alpha", None))
        install_kernels(model, self, cfg)
        return model

    def adapt(self, model: nn.Module, cfg: RunConfig) -> nn.Module:
        """Freeze, unfreeze or add this strategy's trainable layers."""
        raise NotImplementedError

    def kernel_options(self, cfg: RunConfig):
        """Which of strop's kernels leave this strategy's math unchanged (a `KernelOptions`), or None for
        none. Full-model strategies save every weight, so frozen ones keep their dtype."""
        from strop.kernels import KernelOptions

        return KernelOptions(bf16_frozen=False)

    def reference_context(self, model: nn.Module) -> AbstractContextManager | None:
        """A context in which `model` computes as the reference policy of preference and RL objectives, or
        None where training changes the base weights themselves (the objective then caches reference
        log-probs or loads a frozen copy)."""
        return None

    def build_optimizer(self, model: nn.Module, cfg: RunConfig, device: torch.device) -> torch.optim.Optimizer:
        """AdamW over the trainable parameters; strategies with their own update rule override this."""
        from strop.strategies.optim import build_optimizer

        return build_optimizer(list(self.trainable_parameters(model).values()), cfg, device)

    def attach_optimizer(self, model: nn.Module, optimizer: torch.optim.Optimizer, cfg: RunConfig) -> None:
        """Hooks on the optimizer this run steps, installed before any checkpoint is resumed: L2-SP's pull
        toward the base (`l2sp_alpha`); SPIDER adds its update masks."""
        if getattr(cfg, "l2sp_alpha", None):
            from strop.strategies.l2sp import install_l2sp

            install_l2sp(optimizer, cfg.l2sp_alpha)

    def on_step_start(self, model: nn.Module, step: int, cfg: RunConfig) -> None:
        """Called before every optimizer step (LISA resamples its layers here). Must be a pure function
        of (seed, step) so that resumed runs match."""

    def save(self, model: nn.Module, tokenizer, out_dir: Path) -> None:
        raise NotImplementedError

    def base_model(self, model: nn.Module) -> nn.Module:
        """The underlying transformers model (for generation settings and config)."""
        return model

    def trainable_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        return {name: p for name, p in model.named_parameters() if p.requires_grad}

    def count_parameters(self, model: nn.Module) -> tuple[int, int]:
        """(trainable, total) parameter counts; a 4-bit weight counts as its unpacked size."""
        total = sum(p.numel() * (2 if is_4bit(p) else 1) for p in model.parameters())
        return sum(p.numel() for p in self.trainable_parameters(model).values()), total

    def upcast(self, model: nn.Module, cfg: RunConfig) -> None:
        """Trainable weights to float32 masters, unless this run keeps them in bf16."""
        if self.upcast_trainable and not self.bf16_masters(cfg):
            for param in self.trainable_parameters(model).values():
                if param.dtype != torch.float32:
                    param.data = param.data.float()


def write_quantization_note(model: nn.Module, out_dir: Path) -> None:
    """Record in an artifact folder that the base was trained in 4-bit NF4 (adapters trained on a
    quantized base fit that base best; merging into the float base is an approximation)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base, "is_loaded_in_4bit", False):
        return
    config = getattr(base.config, "quantization_config", None)
    details = config.to_dict() if hasattr(config, "to_dict") else {}
    note = {
        "base_quantization": "bitsandbytes 4-bit",
        "quant_type": details.get("bnb_4bit_quant_type", "nf4"),
        "double_quant": details.get("bnb_4bit_use_double_quant", True),
        "compute_dtype": str(details.get("bnb_4bit_compute_dtype", "")),
        "note": "adapter trained against the 4-bit NF4 base (QLoRA); load the base with the same quantization "
        "for identical outputs, or merge into the float base (an approximation).",
    }
    (Path(out_dir) / "strop_quantization.json").write_text(json.dumps(note, indent=1) + "\n")
