"""Activation checkpointing per decoder layer, with the saved layer inputs optionally offloaded to pinned
host memory on a side stream.

Why not the library path: with transformers' gradient checkpointing the only tensors kept between the
forward and the backward are each layer's input (tokens × hidden in bf16: 1 GiB for Llama-3-8B at 4096
tokens), and they stay on the GPU. Offloading them is a copy of 32 MB per layer that overlaps the next
layer's matmuls on a separate CUDA stream and comes back in the backward just before the layer is
recomputed: the GPU then holds only the layer being worked on. The recompute itself is a reentrant
autograd node (one node per layer: the forward runs under no_grad, the backward re-runs the layer with
grad and back-propagates through it), which also makes the frozen-embedding case work without
`enable_input_require_grads`.

Layers with dropout are recomputed with the same CPU and CUDA random state (as torch.utils.checkpoint).
"""

from __future__ import annotations

import types
import weakref
from collections.abc import Callable

import torch
from torch import nn

_STREAMS: dict[torch.device, torch.cuda.Stream] = {}
_LAST: list = [None]  # weak reference to the most recent offloaded layer input (forward order)


class _Offloaded:
    """A layer input in pinned host memory; `fetch` starts its copy back early (the next layer to be
    back-propagated is the previous one in forward order, so its input is prefetched while this one
    is recomputed)."""

    def __init__(self, hidden: torch.Tensor, stream):
        self.device, self.stream = hidden.device, stream
        self.buf = torch.empty(hidden.shape, dtype=hidden.dtype, device="cpu", pin_memory=True)
        stream.wait_stream(torch.cuda.current_stream(hidden.device))
        with torch.cuda.stream(stream):
            self.buf.copy_(hidden, non_blocking=True)
        hidden.record_stream(stream)
        self.prev = _LAST[0]
        _LAST[0] = weakref.ref(self)
        self.gpu = None

    def fetch(self) -> None:
        if self.gpu is None and self.buf is not None:
            with torch.cuda.stream(self.stream):
                self.gpu = self.buf.to(self.device, non_blocking=True)
            self.ready = self.stream.record_event()

    def take(self) -> torch.Tensor:
        self.fetch()
        current = torch.cuda.current_stream(self.device)
        current.wait_event(self.ready)
        hidden, self.gpu, self.buf = self.gpu, None, None
        hidden.record_stream(current)
        prev = self.prev() if self.prev is not None else None
        if prev is not None:
            prev.fetch()
        return hidden


def _side_stream(device: torch.device):
    if device not in _STREAMS:
        _STREAMS[device] = torch.cuda.Stream(device)
    return _STREAMS[device]


class _Checkpointed(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run: Callable[[torch.Tensor], torch.Tensor], offload: bool, hidden: torch.Tensor) -> torch.Tensor:
        ctx.run = run
        ctx.autocast = (torch.is_autocast_enabled(hidden.device.type), torch.get_autocast_dtype(hidden.device.type))
        ctx.rng = torch.get_rng_state()
        ctx.cuda_rng = torch.cuda.get_rng_state(hidden.device) if hidden.is_cuda else None
        with torch.no_grad():
            out = run(hidden)
        ctx.offloaded = offload and hidden.is_cuda
        if ctx.offloaded:
            ctx.stored = _Offloaded(hidden, _side_stream(hidden.device))
        else:
            ctx.save_for_backward(hidden)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if ctx.offloaded:
            hidden, ctx.stored = ctx.stored.take(), None
        else:
            (hidden,) = ctx.saved_tensors
        hidden = hidden.detach().requires_grad_(True)
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(hidden.device) if hidden.is_cuda else None
        torch.set_rng_state(ctx.rng)
        if ctx.cuda_rng is not None:
            torch.cuda.set_rng_state(ctx.cuda_rng, hidden.device)
        try:
            enabled, dtype = ctx.autocast
            with torch.enable_grad(), torch.autocast(hidden.device.type, dtype=dtype, enabled=enabled):
                out = ctx.run(hidden)
            torch.autograd.backward(out, grad)
        finally:
            torch.set_rng_state(cpu_rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng, hidden.device)
        ctx.run = None
        return None, None, hidden.grad


def _layer_forward(self, hidden_states, *args, **kwargs):
    if not (self.training and torch.is_grad_enabled()):
        return self._strop_forward(hidden_states, *args, **kwargs)
    extra: dict = {}

    def run(h):
        out = self._strop_forward(h, *args, **kwargs)
        if isinstance(out, tuple):  # older transformers: (hidden, ...) — keep the rest for the caller
            extra["rest"] = out[1:]
            return out[0]
        return out

    if not hidden_states.requires_grad:  # frozen embeddings: the node must still run its backward
        hidden_states = hidden_states.detach().requires_grad_(True)
    out = _Checkpointed.apply(run, self._strop_offload, hidden_states)
    return (out, *extra["rest"]) if "rest" in extra else out


def checkpoint_layers(layers: nn.ModuleList, offload: bool) -> int:
    """Checkpoint each decoder layer of `layers` (offloading its input when `offload`); turns off
    transformers' own per-layer checkpointing there so the layer is not recomputed twice."""
    for layer in layers:
        if hasattr(layer, "gradient_checkpointing"):
            layer.gradient_checkpointing = False
        if not hasattr(layer, "_strop_forward"):
            layer._strop_forward = layer.forward
            layer.forward = types.MethodType(_layer_forward, layer)
        layer._strop_offload = offload
    return len(layers)
