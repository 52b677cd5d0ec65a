"""Trainable parameters and peak training memory per strategy, before anything is loaded (`strop estimate`).

The model is built on the meta device from its config alone (no weights read, nothing allocated), and
its shapes feed a per-strategy memory model:

    weights      strop keeps every weight in float32 (4 B); QLoRA stores the decoder's linear weights in
                 NF4 with double quantization, 4 + 8/64 + 32/(64·256) ≈ 4.127 bits each
    gradients    4 B per trainable parameter (float32)
    optimizer    AdamW: two float32 moments per trainable parameter (8 B); GaLore: for a targeted m×n
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

The batch is taken at its worst case, micro_batch_size × sequence_len tokens. Validated against measured
peak RSS on the CPU (see the strategies README section); GPU figures are for the GPU machine to check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

GIB = 1024**3
NF4_BYTES = (4 + 8 / 64 + 32 / (64 * 256)) / 8
ALTERNATIVES = ("full", "lora", "qlora", "dora", "galore")


@dataclass
class Shapes:
    """What the memory model needs to know about an architecture (from a meta-device model)."""

    total: int
    hidden: int
    kv: int
    intermediate: int
    layers: int
    vocab: int
    linears: list[tuple[str, int, int]]  # (name, in_features, out_features)
    biases: int
    layer_params: int
    model_type: str
    #: MoE models: per `moe_lora_targets` part, (linear layer names, fused expert weights as (E, in, out),
    #: parameters trained fully); empty for a dense model.
    moe_parts: dict[str, tuple[list[str], list[tuple[int, ...]], int]] = field(default_factory=dict)


def skeleton(cfg) -> nn.Module:
    """The model built from its config on the meta device: shapes only, no memory, no weights read."""
    from transformers import AutoConfig

    from strop.models import resolve_model_path
    from strop.models.loading import auto_class

    config = AutoConfig.from_pretrained(resolve_model_path(cfg.base_model), trust_remote_code=cfg.trust_remote_code)
    with torch.device("meta"):
        return auto_class(config).from_config(config, trust_remote_code=cfg.trust_remote_code)


def shapes_of(model: nn.Module) -> Shapes:
    from strop.strategies.layers import decoder_layers

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


def _lora_count(cfg, shapes: Shapes, dora: bool) -> int:
    """LoRA's trainable parameters: r·(in + out) per adapted linear (+ out for DoRA's magnitude); on an
    MoE with all-linear targets, what `moe_lora_targets` selects: r·E·(in + out) per fused expert weight
    (one LoRA pair per expert) and the routers trained fully."""
    if shapes.moe_parts and cfg.lora_target_modules == "all-linear":
        names = {n for part in cfg.moe_lora_targets for n in shapes.moe_parts[part][0]}
        linears = [t for t in shapes.linears if t[0] in names]
        fused = sum(cfg.lora_r * e * (i + o) for part in cfg.moe_lora_targets for e, o, i in shapes.moe_parts[part][1])
        saved = sum(shapes.moe_parts[part][2] for part in cfg.moe_lora_targets)
    else:
        linears, fused, saved = _lora_targets(shapes, cfg.lora_target_modules), 0, 0
    return sum(cfg.lora_r * (i + o) + (o if dora else 0) for _, i, o in linears) + fused + saved


def _lora_targets(shapes: Shapes, targets) -> list[tuple[str, int, int]]:
    """PEFT's matching: all-linear is every linear layer but the output head; else name or suffix."""
    if targets == "all-linear":
        return [t for t in shapes.linears if not t[0].endswith("lm_head")]
    return [t for t in shapes.linears if any(t[0] == k or t[0].endswith("." + k) for k in targets)]


def _quantized_linear_params(shapes: Shapes) -> int:
    return sum(i * o for n, i, o in shapes.linears if not n.endswith("lm_head"))


def trainable_count(strategy: str, cfg, shapes: Shapes) -> int:
    """Parameters the strategy trains (for LISA: at any one time)."""
    if strategy in ("lora", "qlora", "dora", "rslora"):
        return _lora_count(cfg, shapes, strategy == "dora" or cfg.peft_use_dora)
    if strategy == "moe_lora":  # E LoRA pairs per target, plus an E × in router unless every expert is on
        experts, k = cfg.moe_lora_experts, cfg.moe_lora_top_k
        routed = 0 < k < experts
        return sum(
            experts * cfg.lora_r * (i + o) + (experts * i if routed else 0)
            for _, i, o in _lora_targets(shapes, cfg.lora_target_modules)
        )
    if strategy == "ia3":
        from peft.utils import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FF
        from peft.utils import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS

        targets = cfg.ia3_target_modules or TARGETS.get(shapes.model_type, [])
        feedforward = cfg.ia3_feedforward_modules or FF.get(shapes.model_type, [])
        return sum(i if any(n.endswith(f) for f in feedforward) else o for n, i, o in _lora_targets(shapes, targets))
    if strategy == "prompt_tuning":
        return cfg.num_virtual_tokens * shapes.hidden
    if strategy == "prefix_tuning":
        return cfg.num_virtual_tokens * shapes.layers * 2 * shapes.kv  # keys and values per layer
    if strategy == "bitfit":
        return shapes.biases
    if strategy == "lisa":
        per_layer = shapes.layer_params / max(1, shapes.layers)
        return int(shapes.total - shapes.layer_params + min(cfg.lisa_n_layers, shapes.layers) * per_layer)
    return shapes.total  # full, galore


def optimizer_bytes(strategy: str, cfg, shapes: Shapes, trainable: int) -> float:
    if strategy == "galore":
        targets = [t for t in shapes.linears if any(k in t[0] for k in cfg.galore_target_modules)]
        projected, states = 0, 0
        for _, i, o in targets:  # weight is o×i
            r = min(cfg.galore_rank, i, o)
            projected += i * o
            states += (2 * r * max(i, o) + r * min(i, o)) if r < min(i, o) else 2 * i * o
        return 4 * (states + 2 * (shapes.total - projected))
    if strategy == "lisa":
        return 8 * shapes.total
    return 8 * trainable


def activation_bytes(cfg, shapes: Shapes, bf16: bool, strategy: str = "full") -> float:
    tokens = cfg.micro_batch_size * cfg.sequence_len
    dora = 0
    if strategy == "dora" or (strategy in ("lora", "qlora", "rslora") and cfg.peft_use_dora):
        # DoRA rescales the base output and the LoRA output by m/‖W'‖: both are saved, 2 × d_out floats
        dora = sum(8 * o for _, _, o in _lora_targets(shapes, cfg.lora_target_modules))
    h, f = shapes.hidden, shapes.intermediate
    per_layer = 36 * h + 16 * f
    blocks = (shapes.layers * 4 * h + per_layer) if cfg.gradient_checkpointing else shapes.layers * per_layer
    logits = ((6 if bf16 else 4) + 8) * shapes.vocab
    return tokens * (blocks + logits + 4 * h + dora)


def weight_bytes(strategy: str, cfg, shapes: Shapes, trainable: int) -> float:
    adapter = (
        trainable if strategy in ("lora", "qlora", "dora", "rslora", "ia3", "prompt_tuning", "prefix_tuning") else 0
    )
    if strategy == "qlora" or (cfg.load_in_4bit and adapter):
        quantized = _quantized_linear_params(shapes)
        return quantized * NF4_BYTES + 4 * (shapes.total - quantized) + 4 * adapter
    return 4 * (shapes.total + adapter)


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


def estimate(strategy: str, cfg, shapes: Shapes, bf16: bool, trainable: int | None = None) -> Estimate:
    trainable = trainable_count(strategy, cfg, shapes) if trainable is None else trainable
    # LISA's gradients exist only for the active layers; everyone else's for what they train
    return Estimate(
        strategy,
        trainable,
        shapes.total,
        weight_bytes(strategy, cfg, shapes, trainable),
        4 * trainable,
        optimizer_bytes(strategy, cfg, shapes, trainable),
        activation_bytes(cfg, shapes, bf16, strategy),
    )


def spectrum_count(model: nn.Module, cfg) -> int:
    """Spectrum's trainable count: the listed parameters, or the top fraction of each layer type (the
    matrices of one type have one size, so which ones win on SNR does not change the count)."""
    from strop.strategies.layers import layer_type
    from strop.strategies.spectrum import matches

    params = dict(model.named_parameters())
    if cfg.spectrum_unfrozen_parameters is not None:
        return sum(p.numel() for n, p in params.items() if matches(n, cfg.spectrum_unfrozen_parameters))
    by_type: dict[str, list[int]] = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)) and params.get(f"{name}.weight") is module.weight:
            by_type.setdefault(layer_type(f"{name}.weight"), []).append(module.weight.numel())
    return sum(sum(sorted(v)[: int(math.floor(cfg.spectrum_top_fraction * len(v) + 0.5))]) for v in by_type.values())


def estimates_for(cfg) -> tuple[list[Estimate], Shapes, bool]:
    """The configured strategy first, then the standard alternatives."""
    model = skeleton(cfg)
    shapes = shapes_of(model)
    bf16 = cfg.bf16 is True or (cfg.bf16 == "auto" and not cfg.fp16)
    names = [cfg.strategy] + [s for s in ALTERNATIVES if s != cfg.strategy]
    rows = [
        estimate(name, cfg, shapes, bf16, spectrum_count(model, cfg) if name == "spectrum" else None) for name in names
    ]
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
