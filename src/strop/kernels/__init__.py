"""strop's GPU path: Triton kernels with plain-PyTorch fallbacks, and one opt-in `patch_model`.

    model = strategy.apply(model, cfg)          # PEFT LoRA, full, ...
    strop.kernels.patch_model(model)            # on CUDA: fused RMSNorm, SwiGLU, LoRA, checkpointing
    loss = strop.kernels.causal_lm_loss(model, input_ids, labels)   # no logits materialised

`strop train` does this by default on CUDA (strategies/kernels.py; `kernels: false` turns it off).

Each module's docstring says why it beats the library path. `patch_model` changes no math: it swaps the
forward of modules it recognises (Llama-family RMSNorm with `variance_epsilon`, gated MLPs with SiLU,
PEFT LoRA Linear layers, the decoder's layer list) and leaves everything else alone.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch
from torch import nn

from strop.kernels._triton import HAS_TRITON
from strop.kernels.checkpoint import checkpoint_layers
from strop.kernels.cross_entropy import causal_lm_group_losses, causal_lm_loss, linear_cross_entropy, shift_labels
from strop.kernels.lora import group_layers, lora_linear, patch_attention_group, patch_lora_layers
from strop.kernels.rmsnorm import rms_norm
from strop.kernels.swiglu import swiglu, swiglu_packed


@dataclass
class KernelOptions:
    """What `patch_model` swaps in. checkpoint: None (keep whatever the model does), "gpu" (strop's
    per-layer checkpoint, inputs kept on the GPU) or "offload" (inputs in pinned host memory)."""

    rms_norm: bool = True
    swiglu: bool = True
    lora: bool = True
    group: bool = True
    checkpoint: str | None = "gpu"
    bf16_frozen: bool = True
    rope_compile: bool = True  # torch.compile the model family's apply_rotary_pos_emb (CUDA + Triton only)


def _rms_forward(self, x):
    return rms_norm(x, self.weight, self.variance_epsilon)


def _mlp_forward(self, x):
    group = getattr(self, "_strop_group", None)
    if group is not None and group.usable():
        return self.down_proj(swiglu_packed(group(x, packed=True)))
    return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


def _is_rmsnorm(module: nn.Module) -> bool:
    return (
        type(module).__name__.endswith("RMSNorm")
        and hasattr(module, "variance_epsilon")
        and isinstance(getattr(module, "weight", None), torch.Tensor)
        and not hasattr(module, "bias")
    )


def _is_swiglu_mlp(module: nn.Module) -> bool:
    act = getattr(module, "act_fn", None)
    return all(hasattr(module, n) for n in ("gate_proj", "up_proj", "down_proj")) and type(act).__name__ in (
        "SiLU",
        "SiLUActivation",
    )


def _decoder_layers(model: nn.Module) -> nn.ModuleList | None:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    return layers if isinstance(layers, nn.ModuleList) else None


def _swap(module: nn.Module, forward) -> bool:
    if hasattr(module, "_strop_forward"):
        return False
    module._strop_forward = module.forward
    module.forward = types.MethodType(forward, module)
    return True


def _compiled_or_plain(fn):
    """`fn` through torch.compile, falling back to `fn` for good if compilation fails."""
    compiled = torch.compile(fn, fullgraph=True)  # dynamic after a second shape: no recompile per length
    state = {"ok": True}

    def wrapper(*args, **kwargs):
        if state["ok"]:
            try:
                return compiled(*args, **kwargs)
            except Exception as e:  # inductor or toolchain trouble: the plain function is the same math
                state["ok"] = False
                print(f"strop.kernels: compiled RoPE unavailable ({type(e).__name__}); using the plain one")
        return fn(*args, **kwargs)

    wrapper._strop_compiled = True
    return wrapper


def _compile_rope(model: nn.Module) -> int:
    """Replace the modeling module's `apply_rotary_pos_emb` (a handful of elementwise kernels with a
    concatenation each way) by one compiled kernel forward and backward. Affects every model of that
    family in the process."""
    import sys

    for module in model.modules():
        family = sys.modules.get(type(module).__module__)
        fn = getattr(family, "apply_rotary_pos_emb", None)
        if fn is not None and hasattr(module, "q_proj"):
            if not getattr(fn, "_strop_compiled", False):
                family.apply_rotary_pos_emb = _compiled_or_plain(fn)
            return 1
    return 0


def cast_frozen(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """Store frozen floating-point weights in `dtype` (trainable ones keep their fp32 masters): halves
    the base's memory under an fp32-loaded model, and the matmuls read half the bytes."""
    n = 0
    for param in model.parameters():
        if not param.requires_grad and param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)
            n += 1
    return n


def patch_model(model: nn.Module, options: KernelOptions | None = None) -> dict[str, int]:
    """Swap in strop's kernels on `model` in place; returns what was patched (counts per kind)."""
    opts = options or KernelOptions()
    done = {"rms_norm": 0, "swiglu": 0, "lora": 0, "checkpoint": 0, "cast": 0}
    if opts.bf16_frozen and next(model.parameters()).is_cuda:
        done["cast"] = cast_frozen(model)
    for module in model.modules():
        if opts.rms_norm and _is_rmsnorm(module):
            done["rms_norm"] += _swap(module, _rms_forward)
        elif opts.swiglu and _is_swiglu_mlp(module):
            done["swiglu"] += _swap(module, _mlp_forward)
    if opts.lora and opts.group:
        done["groups"] = 0
        for module in model.modules():
            if all(hasattr(module, n) for n in ("q_proj", "k_proj", "v_proj")):
                done["groups"] += patch_attention_group(module)
            elif (
                done["swiglu"]
                and hasattr(module, "_strop_forward")
                and _is_swiglu_mlp(module)
                and hasattr(module.gate_proj, "lora_A")
                and not hasattr(module, "_strop_group")
            ):
                group = group_layers([module.gate_proj, module.up_proj])
                if group is not None:
                    module._strop_group = group
                    done["groups"] += 1
    if opts.lora:
        done["lora"] = patch_lora_layers(model)
    if opts.rope_compile and HAS_TRITON and next(model.parameters()).is_cuda:
        done["rope"] = _compile_rope(model)
    layers = _decoder_layers(model)
    if opts.checkpoint and layers is not None:
        done["checkpoint"] = checkpoint_layers(layers, offload=opts.checkpoint == "offload")
    return done


_RECORD = "_strop_kernels"


def record(model: nn.Module, what: dict) -> None:
    """Note on `model` what `strop train` did with the kernels: the plan prints it, and an objective asks
    `fused_loss_ready` rather than knowing which strategy or device is in use."""
    setattr(model, _RECORD, what)


def recorded(model: nn.Module) -> dict:
    return getattr(model, _RECORD, None) or {}


def fused_loss_ready(model: nn.Module) -> bool:
    """Whether `causal_lm_loss` computes this model's loss (same math, no full logits)."""
    return bool(recorded(model).get("fused_loss"))


__all__ = [
    "KernelOptions",
    "patch_model",
    "cast_frozen",
    "causal_lm_group_losses",
    "causal_lm_loss",
    "linear_cross_entropy",
    "shift_labels",
    "lora_linear",
    "rms_norm",
    "swiglu",
    "record",
    "recorded",
    "fused_loss_ready",
]
