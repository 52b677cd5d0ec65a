"""What a memory estimate needs to know about an architecture, read from a meta-device model
(strop.train.estimate builds it; each strategy's `*_estimate` methods read it)."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Bytes per weight in NF4 with double quantization: 4 + 8/64 + 32/(64·256) ≈ 4.127 bits.
NF4_BYTES = (4 + 8 / 64 + 32 / (64 * 256)) / 8


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


def linear_targets(shapes: Shapes, targets) -> list[tuple[str, int, int]]:
    """PEFT's matching: all-linear is every linear layer but the output head; else name or suffix."""
    if targets == "all-linear":
        return [t for t in shapes.linears if not t[0].endswith("lm_head")]
    return [t for t in shapes.linears if any(t[0] == k or t[0].endswith("." + k) for k in targets)]


def quantized_linear_params(shapes: Shapes) -> int:
    """Weights a 4-bit base stores in NF4: the decoder's linear layers (the output head stays float)."""
    return sum(i * o for n, i, o in shapes.linears if not n.endswith("lm_head"))
