"""Trainable parameters and peak training memory per strategy, before anything is loaded (`strop estimate`).

The model is built on the meta device from its config alone (no weights read, nothing allocated), and
its shapes feed a per-strategy memory model:

    weights      strop keeps every weight in float32 (4 B), or in bf16 (2 B) under `master_weights: bf16`;
                 QLoRA stores the decoder's linear weights in NF4 with double quantization,
                 4 + 8/64 + 32/(64·256) ≈ 4.127 bits each
    gradients    4 B per trainable parameter (float32; 2 B in bf16 under `master_weights: bf16`)
    optimizer    AdamW: two float32 moments per trainable parameter (8 B; two bf16 moments, 4 B, under
                 `master_weights: bf16`); GaLore: for a targeted m×n
                 weight, moments of the projected gradient, 2·r·max(m, n), plus the r·min(m, n)
                 projection; LISA: moments appear for every layer it ever samples, so they reach full
                 AdamW size over a long run
    activations  tensors saved for backward, per token and decoder layer of a Llama-style block (two
                 RMSNorms, q/k/v/o with the key/value heads repeated for SDPA, SwiGLU MLP): 36·h + 16·f
                 bytes, measured with saved-tensor hooks on SmolLM2 (48.2 kB predicted 45.3 kB in
                 float32; bf16 autocast saves about as much, its casts adding copies); plus the logits:
                 the saved log-softmax (4·V float32, 6·V under bf16 autocast) and the two V-wide
                 gradients alive at the start of backward (8·V). Gradient checkpointing keeps each
                 layer's input (4·h) plus one layer's full set. DoRA adds 2 × d_out floats per token
                 and adapted layer (the base and LoRA outputs it rescales).
    peak         weights + optimizer states + max(activations, gradients): gradients are freed
                 (set to None) after every step and grow during backward while activations are freed,
                 so the two peaks do not add up.
    overhead     what the process holds before training (CUDA context, or on the CPU the Python +
                 torch + transformers resident set): reported separately

Each strategy answers for its own share (trainable count, optimizer states, its extra activations, whether
the base is stored in 4-bit): the `*_estimate` methods of strop.strategies.base.Strategy, overridden in the
strategy's own module. Nothing here branches on a strategy's name.

The batch is taken at its worst case, micro_batch_size × sequence_len tokens. Validated against measured
peak RSS on the CPU (see the strategies README section); GPU figures are for the GPU machine to check.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from strop.config import Config
from strop.models.shapes import NF4_BYTES, Shapes

GIB = 1024**3
ALTERNATIVES = ("full", "lora", "qlora", "dora", "galore")
__all__ = [
    "ALTERNATIVES",
    "GIB",
    "NF4_BYTES",
    "Estimate",
    "Shapes",
    "activation_bytes",
    "estimate",
    "estimates_for",
    "optimizer_bytes",
    "process_overhead_bytes",
    "shapes_of",
    "skeleton",
    "spectrum_count",
    "trainable_count",
    "weight_bytes",
]


def skeleton(cfg: Config) -> nn.Module:
    """The model built from its config on the meta device: shapes only, no memory, no weights read."""
    from transformers import AutoConfig

    from strop.models import resolve_model_path
    from strop.models.loading import auto_class

    config = AutoConfig.from_pretrained(resolve_model_path(cfg.base_model), trust_remote_code=cfg.trust_remote_code)
    with torch.device("meta"):
        return auto_class(config).from_config(config, trust_remote_code=cfg.trust_remote_code)


def shapes_of(model: nn.Module) -> Shapes:
    from strop.models.blocks import decoder_layers

    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    hidden = config.hidden_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv = (getattr(config, "num_key_value_heads", None) or heads) * head_dim
    _, layers = decoder_layers(model)
    linears = [(n, m.in_features, m.out_features) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    params = dict(model.named_parameters())
    return Shapes(
        total=sum(p.numel() for p in params.values()),
        hidden=hidden,
        kv=kv,
        intermediate=getattr(config, "intermediate_size", 4 * hidden),
        layers=len(layers),
        vocab=config.vocab_size,
        linears=linears,
        biases=sum(p.numel() for n, p in params.items() if n.endswith(".bias")),
        layer_params=sum(p.numel() for p in layers.parameters()),
        model_type=config.model_type,
        moe_parts=_moe_parts(model),
    )


def _moe_parts(model: nn.Module) -> dict[str, tuple[list[str], list[tuple[int, ...]], int]]:
    from typing import get_args

    from strop.moe.adapters import lora_selection
    from strop.moe.detect import moe_blocks
    from strop.moe.params import LoraPart

    if not moe_blocks(model):
        return {}
    params, modules = dict(model.named_parameters()), dict(model.named_modules())
    parts: dict[str, tuple[list[str], list[tuple[int, ...]], int]] = {}
    for part in get_args(LoraPart):
        linears, fused, saved = lora_selection(model, [part])
        parts[part] = (
            linears,
            [tuple(params[n].shape) for n in fused],
            sum(p.numel() for n in saved for p in modules[n].parameters()),
        )
    return parts


def _strategy(name: str):
    from strop.strategies import get_strategy

    return get_strategy(name)


def trainable_count(strategy: str, cfg: Config, shapes: Shapes) -> int:
    """Parameters the strategy trains (for LISA: at any one time)."""
    return _strategy(strategy).trainable_estimate(cfg, shapes)


def optimizer_bytes(strategy: str, cfg: Config, shapes: Shapes, trainable: int) -> float:
    return _strategy(strategy).optimizer_bytes_estimate(cfg, shapes, trainable)


def activation_bytes(cfg: Config, shapes: Shapes, bf16: bool, strategy: str = "full") -> float:
    tokens = cfg.micro_batch_size * cfg.sequence_len
    extra = _strategy(strategy).activation_bytes_per_token(cfg, shapes)  # DoRA: 2 × d_out floats per adapted layer
    h, f = shapes.hidden, shapes.intermediate
    per_layer = 36 * h + 16 * f
    blocks = (shapes.layers * 4 * h + per_layer) if cfg.gradient_checkpointing else shapes.layers * per_layer
    logits = ((6 if bf16 else 4) + 8) * shapes.vocab
    return tokens * (blocks + logits + 4 * h + extra)


def weight_bytes(strategy: str, cfg: Config, shapes: Shapes, trainable: int) -> float:
    return _strategy(strategy).weight_bytes_estimate(cfg, shapes, trainable)


@dataclass
class Estimate:
    strategy: str
    trainable: int
    total: int
    weights: float
    gradients: float
    optimizer: float
    activations: float

    @property
    def peak(self) -> float:
        return self.weights + self.optimizer + max(self.activations, self.gradients)


def estimate(strategy: str, cfg: Config, shapes: Shapes, bf16: bool, trainable: int | None = None) -> Estimate:
    trainable = trainable_count(strategy, cfg, shapes) if trainable is None else trainable
    # LISA's gradients exist only for the active layers; everyone else's for what they train
    return Estimate(
        strategy,
        trainable,
        shapes.total,
        weight_bytes(strategy, cfg, shapes, trainable),
        _strategy(strategy).gradient_bytes_estimate(cfg, trainable),
        optimizer_bytes(strategy, cfg, shapes, trainable),
        activation_bytes(cfg, shapes, bf16, strategy),
    )


def spectrum_count(model: nn.Module, cfg: Config) -> int:
    """Spectrum's trainable count, which needs the meta-device model itself (strategies/spectrum.py)."""
    count = _strategy("spectrum").trainable_from_skeleton(model, cfg)
    assert count is not None
    return count


def estimates_for(cfg: Config) -> tuple[list[Estimate], Shapes, bool]:
    """The configured strategy first, then the standard alternatives."""
    model = skeleton(cfg)
    shapes = shapes_of(model)
    bf16 = cfg.bf16 is True or (cfg.bf16 == "auto" and not cfg.fp16)
    names = [cfg.strategy] + [s for s in ALTERNATIVES if s != cfg.strategy]
    rows = [estimate(name, cfg, shapes, bf16, _strategy(name).trainable_from_skeleton(model, cfg)) for name in names]
    return rows, shapes, bf16


def process_overhead_bytes() -> float:
    """Resident memory of this process now (Python + torch + transformers imported): the CPU baseline."""
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:  # Linux without psutil
        import os

        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
