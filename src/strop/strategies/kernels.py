"""strop's GPU kernels in `strop train`: on by default on CUDA, `kernels: false` turns them off.

Why here: `Strategy.apply` (base.py) calls `install_kernels` after the strategy's `adapt` has put its layers
in place, so `strop.kernels.patch_model` sees the final modules (PEFT's LoRA layers included) and no loop,
objective or strategy needs its own switch. Each strategy's `kernel_options` says what may change without
changing its math; this module adds what the run decides:

- the device: CUDA only. On the CPU nothing is patched (the Triton kernels would fall back to the same
  PyTorch ops, and the frozen base stays in the dtype it was loaded in).
- torchrun: not combined with FSDP2 yet. `distributed.wrap` shards the model after this point; the grouped
  LoRA projections re-point their base weights into one unsharded buffer and the per-layer checkpoint
  recomputes outside FSDP2's backward hooks, so a multi-process run keeps the library path.
- precision: the frozen base is stored in bf16 only under bf16 autocast, where its matmuls are bf16 anyway.
- checkpointing: strop's per-layer checkpoint (`kernel_checkpoint`) replaces transformers' rather than
  nesting inside it, which would recompute every layer twice: the loop's later call of
  `gradient_checkpointing_enable` is then answered by a no-op on that model.
- the SFT loss: the chunked linear + cross-entropy (no full logits) when the output head is a plain
  nn.Linear of a model family whose logits are exactly `hidden @ W.T` (no soft-capping or logit scale).
"""

from __future__ import annotations

import torch
from torch import nn

from strop import kernels
from strop.errors import StropError
from strop.run_types import RunConfig
from strop.runtime import distributed

#: Model types whose causal-LM logits are the head's plain matmul of the last hidden state.
PLAIN_HEAD_TYPES = {"llama", "mistral", "qwen2", "qwen3", "phi3"}


def checkpoint_mode(cfg: RunConfig) -> str | None:
    """strop's per-layer checkpointing for this run: None, "gpu" or "offload"."""
    mode = getattr(cfg, "kernel_checkpoint", "auto")
    if mode == "auto":
        return "gpu" if getattr(cfg, "gradient_checkpointing", False) else None
    return None if mode == "none" else mode


def _on_cuda(model: nn.Module) -> bool:
    return next(model.parameters()).is_cuda


def _why_off(on_cuda: bool, strategy, cfg: RunConfig) -> str | None:
    if not getattr(cfg, "kernels", True):
        return "kernels: false"
    if not on_cuda:
        return "no CUDA device"
    if distributed.launched():
        return "not combined with FSDP2 under torchrun yet"
    if strategy.kernel_options(cfg) is None:
        return f"not for {strategy.name}"
    return None


def load_dtype(strategy, cfg: RunConfig, device: torch.device) -> torch.dtype:
    """The dtype to load the base model in: bf16 where the kernels will store the frozen base in bf16
    anyway (CUDA, bf16 autocast, a strategy whose frozen weights may change dtype), so that no fp32 copy
    of the base ever reaches the GPU (for an 8B base that transient copy was a 32 GB peak); fp32
    otherwise (trainable weights keep fp32 masters either way); bf16 under `master_weights: bf16`."""
    from strop.runtime.precision import autocast_dtype

    if strategy.bf16_masters(cfg):
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise StropError("master_weights: bf16 needs a GPU that computes in bf16 (Ampere or newer); use fp32")
        return torch.bfloat16
    if _why_off(device.type == "cuda", strategy, cfg) or autocast_dtype(cfg, device) != torch.bfloat16:
        return torch.float32
    return torch.bfloat16 if strategy.kernel_options(cfg).bf16_frozen else torch.float32


def _fused_loss_fits(model: nn.Module) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    return base.config.model_type in PLAIN_HEAD_TYPES and type(head) is nn.Linear and hasattr(base, "get_decoder")


def _library_checkpointing_skipped(*args, **kwargs) -> None:
    """Stands in for transformers' gradient_checkpointing_enable where strop checkpoints each layer."""


def _hand_over_checkpointing(base: nn.Module) -> None:
    for name in ("gradient_checkpointing_enable", "activation_checkpointing_enable"):
        if hasattr(base, name):
            setattr(base, name, _library_checkpointing_skipped)


def install_kernels(model: nn.Module, strategy, cfg: RunConfig) -> None:
    """Patch `model` (as `strategy` prepared it) with strop's kernels where this run allows them, and
    record what was done on the model."""
    from strop.runtime.precision import autocast_dtype

    reason = _why_off(_on_cuda(model), strategy, cfg)
    if reason:
        kernels.record(model, {"off": reason})
        return
    options = strategy.kernel_options(cfg)
    options.checkpoint = checkpoint_mode(cfg)
    device = next(model.parameters()).device
    options.bf16_frozen = options.bf16_frozen and autocast_dtype(cfg, device) == torch.bfloat16
    done = kernels.patch_model(model, options)
    if options.checkpoint and done["checkpoint"]:
        _hand_over_checkpointing(strategy.base_model(model))
    kernels.record(model, {"patched": done, "checkpoint": options.checkpoint, "fused_loss": _fused_loss_fits(model)})


def describe_kernels(model: nn.Module) -> str:
    """One line for the run's plan: what was patched, or why nothing was."""
    what = kernels.recorded(model)
    if not what:
        return "off"
    if "off" in what:
        return f"off ({what['off']})"
    done = what["patched"]
    names = {
        "rms_norm": "RMSNorm",
        "swiglu": "SwiGLU",
        "lora": "LoRA layers",
        "groups": "grouped projections",
        "cast": "frozen tensors in bf16",
    }
    parts = [f"{label} {done[key]}" for key, label in names.items() if done.get(key)]
    if done.get("rope"):
        parts.append("compiled RoPE")
    if done.get("checkpoint"):
        parts.append(f"checkpointed layers {done['checkpoint']} ({what['checkpoint']})")
    parts.append("SFT loss by fused linear+CE" if what["fused_loss"] else "SFT loss from full logits")
    return "on: " + ", ".join(parts)
