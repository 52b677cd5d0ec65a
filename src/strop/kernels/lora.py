"""LoRA linear layer, y = x Wᵀ + b + s · (x Aᵀ) Bᵀ, as one autograd node with a hand-written backward.

    dx = dy W + s · (dy B) A,   dA = s · (dy B)ᵀ x,   dB = s · dyᵀ (x Aᵀ)

Why not the library path: PEFT keeps fp32 adapters and casts the activation x to fp32 before the
adapter matmuls (an fp32 copy of every adapted layer's input, saved for the backward: the largest part
of the baseline's memory), and builds five autograd nodes per layer. Here the tiny A and B are cast to
the compute dtype (bf16) once per call while their fp32 masters keep receiving fp32 gradients; the
saved tensors are x itself (shared by q, k and v, which read the same normalised input) and the
r-wide x Aᵀ; the adapter term is added to the base output in place (addmm_), and the same in place add
forms dx. The frozen W receives no gradient and is never copied.

QLoRA's bitsandbytes 4-bit bases (NF4 or FP4 Linear4bit) take the same node: the packed weight is
dequantized just in time to the compute dtype for the forward matmul and again for dx in the backward
(what bnb's own matmul_4bit does), so no dense copy lives between the two. What changes against PEFT's
bnb path is what changes on a float base: no fp32 copy of x for the adapter, one node instead of five,
and q/k/v and gate/up grouped (each packed weight dequantized into its row block of one transient
buffer; the packed weights themselves are never concatenated).

Used only where the math is plain LoRA: one active adapter, no dropout, not merged, no DoRA, a frozen
nn.Linear base, floating-point or bitsandbytes 4-bit. Everything else keeps PEFT's forward.
"""

from __future__ import annotations

import types

import torch
from torch import nn


def _compute_dtype(x: torch.Tensor, weight_dtype: torch.dtype) -> torch.dtype:
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return weight_dtype if weight_dtype in (torch.bfloat16, torch.float16) else x.dtype


def _quant_state(weight: torch.Tensor):
    """bitsandbytes' 4-bit state of a packed base weight, or None for a floating-point one."""
    return None if weight.is_floating_point() else getattr(weight, "quant_state", None)


def _standard_4bit(state) -> bool:
    """Whether a packed weight is bnb 4-bit in the standard layout `dequantize_4bit` reads. Linear4bit's
    CPU inference path (eval mode, an input without grad, an AVX512-BF16 CPU: e.g. one no_grad
    evaluation) re-lays the weight out in place for its bf16 kernel (`packing_format_for_cpu`);
    dequantizing that layout gives wrong weights, so such a layer keeps PEFT's forward."""
    return state is not None and not getattr(state, "packing_format_for_cpu", False)


def _dense(weight: torch.Tensor, state, cdt: torch.dtype, out: torch.Tensor | None = None) -> torch.Tensor:
    """The base weight in `cdt`: cast if floating-point, else dequantized from 4-bit (into `out`, a
    buffer of the state's dtype, when given)."""
    if state is None:
        return weight.to(cdt)
    from bitsandbytes.functional import dequantize_4bit

    return dequantize_4bit(weight, state, out=out).to(cdt)


class _LoraLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scale: float):
        state = _quant_state(weight)
        cdt = _compute_dtype(x, weight.dtype)
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).to(cdt)
        w, a, b = _dense(weight, state, cdt), lora_a.to(cdt), lora_b.to(cdt)
        with torch.autocast(x.device.type, enabled=False):
            y = x2 @ w.t()
            if bias is not None:
                y += bias.to(cdt)
            xa = x2 @ a.t()
            y.addmm_(xa, b.t(), alpha=scale)
        ctx.save_for_backward(x2, xa, weight, lora_a, lora_b)
        ctx.scale, ctx.cdt, ctx.in_shape, ctx.x_dtype, ctx.state = scale, cdt, shape, x.dtype, state
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y.view(*shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, dy):
        x2, xa, weight, lora_a, lora_b = ctx.saved_tensors
        cdt, s = ctx.cdt, ctx.scale
        g = dy.reshape(-1, dy.shape[-1]).to(cdt)
        a, b = lora_a.to(cdt), lora_b.to(cdt)
        gb = g @ b  # [tokens, r]
        dx = None
        if ctx.needs_input_grad[0]:
            dx = g @ _dense(weight, ctx.state, cdt)
            dx.addmm_(gb, a, alpha=s)
            dx = dx.view(ctx.in_shape).to(ctx.x_dtype)
        da = (gb.t() @ x2).mul_(s).to(lora_a.dtype) if ctx.needs_input_grad[3] else None
        db = (g.t() @ xa).mul_(s).to(lora_b.dtype) if ctx.needs_input_grad[4] else None
        dbias = g.sum(0).to(ctx.bias_dtype) if ctx.bias_dtype is not None and ctx.needs_input_grad[2] else None
        return dx, None, dbias, da, db, None


def lora_linear(x, weight, bias, lora_a, lora_b, scale: float) -> torch.Tensor:
    """x Wᵀ + b + scale · (x Aᵀ) Bᵀ with the memory-lean backward above (any device)."""
    return _LoraLinear.apply(x, weight, bias, lora_a, lora_b, float(scale))


def _plain_lora(layer) -> str | None:
    """The active adapter's name when `layer` computes plain LoRA, else None."""
    if getattr(layer, "disable_adapters", False) or getattr(layer, "merged", False):
        return None
    active = list(getattr(layer, "active_adapters", []))
    if len(active) != 1 or active[0] not in layer.lora_A:
        return None
    name = active[0]
    base = layer.base_layer
    if not isinstance(base, nn.Linear) or base.weight.requires_grad or getattr(layer, "fan_in_fan_out", False):
        return None
    if not base.weight.is_floating_point() and not _standard_4bit(_quant_state(base.weight)):
        return None
    if layer.use_dora.get(name, False) if hasattr(layer, "use_dora") else False:
        return None
    if not isinstance(layer.lora_dropout[name], nn.Identity):
        return None
    if getattr(layer, "lora_magnitude_vector", None) and name in layer.lora_magnitude_vector:
        return None
    if name in getattr(layer, "lora_variant", {}):
        return None
    return name


def _fast_forward(self, x, *args, **kwargs):
    name = None if args or kwargs else _plain_lora(self)
    if name is None:
        return self._strop_forward(x, *args, **kwargs)
    base = self.base_layer
    return lora_linear(
        x, base.weight, base.bias, self.lora_A[name].weight, self.lora_B[name].weight, self.scaling[name]
    )


def _peft_lora_classes() -> tuple:
    """PEFT's LoRA Linear and, where bitsandbytes is installed, its LoRA-on-Linear4bit (QLoRA)."""
    try:
        from peft.tuners.lora.layer import Linear
    except ImportError:
        return ()
    try:
        from peft.tuners.lora.bnb import Linear4bit
    except ImportError:
        return (Linear,)
    return Linear, Linear4bit


def patch_lora_layers(model: nn.Module) -> int:
    """Route PEFT LoRA Linear layers (float or 4-bit base) through `lora_linear` (checked per call:
    non-plain cases keep PEFT's forward). Returns the number of layers patched."""
    classes = _peft_lora_classes()
    if not classes:
        return 0
    count = 0
    for module in model.modules():
        if isinstance(module, classes) and not hasattr(module, "_strop_forward"):
            module._strop_forward = module.forward
            module.forward = types.MethodType(_fast_forward, module)
            count += 1
    return count


# --- Grouped projections: several LoRA layers that read the same input (q, k, v; gate, up) -------------
#
# One matmul against the concatenated frozen weights (float base weights are re-pointed as row blocks of
# one buffer, so no memory is added; 4-bit ones are dequantized into the row blocks of a transient
# buffer at each use, forward and backward), one matmul for all the A's, and one block-diagonal B: the shared
# input is read twice per call instead of twice per projection, small-N products (k and v are 1024
# wide) become one large one, and the backward forms dx in one matmul with the summed K dimension
# instead of one per projection plus autograd's additions.


class _LoraGroup(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, sizes, scales, packed: bool, *lora):
        n = len(sizes)
        a_list, b_list = lora[:n], lora[n:]
        cdt = _compute_dtype(x, group.dtype)
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).to(cdt)
        a_cat = torch.cat([a.to(cdt) for a in a_list])
        b_bd = torch.block_diag(*[b.to(cdt) * s for b, s in zip(b_list, scales)])
        with torch.autocast(x.device.type, enabled=False):
            y = x2 @ group.dense(cdt).t()
            xa = x2 @ a_cat.t()
            y.addmm_(xa, b_bd.t())
        ctx.save_for_backward(x2, xa, *lora)
        ctx.meta = (sizes, scales, cdt, shape, x.dtype, packed)
        ctx.group = group
        y = y.view(*shape[:-1], y.shape[-1])
        return y if packed else tuple(y.split(list(sizes), dim=-1))

    @staticmethod
    def backward(ctx, *grads):
        sizes, scales, cdt, shape, x_dtype, packed = ctx.meta
        x2, xa, *lora = ctx.saved_tensors
        n = len(sizes)
        a_list, b_list = lora[:n], lora[n:]
        if packed:
            g = grads[0].reshape(-1, sum(sizes)).to(cdt)
        else:
            g = torch.cat(
                [
                    gr.reshape(-1, sz).to(cdt)
                    if gr is not None
                    else torch.zeros(x2.shape[0], sz, device=x2.device, dtype=cdt)
                    for gr, sz in zip(grads, sizes)
                ],
                dim=1,
            )
        a_cat = torch.cat([a.to(cdt) for a in a_list])
        b_bd = torch.block_diag(*[b.to(cdt) * s for b, s in zip(b_list, scales)])
        gb = g @ b_bd  # [tokens, n·r], already scaled
        dx = None
        if ctx.needs_input_grad[0]:
            dx = g @ ctx.group.dense(cdt)
            dx.addmm_(gb, a_cat)
            dx = dx.view(shape).to(x_dtype)
        da_cat = gb.t() @ x2  # [n·r, in]
        db_full = g.t() @ xa  # [Σout, n·r]
        das, dbs, r0, o0 = [], [], 0, 0
        for a, b, s, size in zip(a_list, b_list, scales, sizes):
            r = a.shape[0]
            das.append(da_cat[r0 : r0 + r].to(a.dtype))
            dbs.append((db_full[o0 : o0 + size, r0 : r0 + r] * s).to(b.dtype))
            r0, o0 = r0 + r, o0 + size
        return (dx, None, None, None, None, *das, *dbs)


class LoraGroup:
    """Projections of one block that share their input; float base weights re-pointed into `w_cat`,
    4-bit ones kept packed in their own layers (`w_cat` None)."""

    def __init__(self, layers: list, names: list[str]):
        self.layers, self.names = layers, names
        weights = [layer.base_layer.weight for layer in layers]
        self.states = [_quant_state(w) for w in weights]
        self.dtype = weights[0].dtype
        if self.states[0] is None:
            self.w_cat = torch.cat([w.data for w in weights])
            start = 0
            for w in weights:
                w.data = self.w_cat[start : start + w.shape[0]]
                start += w.shape[0]
            self.sizes = tuple(w.shape[0] for w in weights)
        else:
            self.w_cat = None
            self.sizes = tuple(state.shape[0] for state in self.states)
        self.stash = None

    def dense(self, cdt: torch.dtype) -> torch.Tensor:
        """The concatenated base weights in `cdt` ([Σout, in]); 4-bit ones dequantized now."""
        if self.w_cat is not None:
            return self.w_cat.to(cdt)
        first, device = self.states[0], self.layers[0].base_layer.weight.device
        if device.type != "cuda":  # bitsandbytes' dequantize has no out= kernel off CUDA
            return torch.cat(
                [_dense(layer.base_layer.weight, state, cdt) for layer, state in zip(self.layers, self.states)]
            )
        buf = torch.empty(sum(self.sizes), first.shape[1], dtype=first.dtype, device=device)
        start = 0
        for layer, state, size in zip(self.layers, self.states, self.sizes):
            _dense(layer.base_layer.weight, state, first.dtype, out=buf[start : start + size])
            start += size
        return buf.to(cdt)

    def usable(self) -> bool:
        return all(_plain_lora(layer) == name for layer, name in zip(self.layers, self.names)) and all(
            layer.base_layer.bias is None for layer in self.layers
        )

    def __call__(self, x, packed: bool):
        a = [layer.lora_A[name].weight for layer, name in zip(self.layers, self.names)]
        b = [layer.lora_B[name].weight for layer, name in zip(self.layers, self.names)]
        scales = tuple(float(layer.scaling[name]) for layer, name in zip(self.layers, self.names))
        return _LoraGroup.apply(x, self, self.sizes, scales, packed, *a, *b)


def _grouped_forward(self, x, *args, **kwargs):
    """q/k/v: the first projection called computes all of the group and leaves the others' outputs
    for their own call with the same input tensor."""
    group: LoraGroup = self._strop_group
    if args or kwargs or not group.usable():
        group.stash = None
        return self._strop_forward(x, *args, **kwargs)
    index = self._strop_group_index
    stash = group.stash
    if stash is not None and stash[0] is x and stash[1][index] is not None:
        outs = stash[1]
        out = outs[index]
        outs[index] = None
        if all(o is None for o in outs):
            group.stash = None
        return out
    outs = list(group(x, packed=False))
    out = outs[index]
    outs[index] = None
    group.stash = (x, outs)
    return out


def group_layers(layers: list, names: list[str] | None = None) -> LoraGroup | None:
    """Group PEFT LoRA layers that read one input (same in-features, frozen same-dtype base, 4-bit ones
    of one dequantized dtype, plain LoRA); returns None when they do not qualify."""
    names = names or [_plain_lora(layer) for layer in layers]
    if any(n is None for n in names) or any(hasattr(layer, "_strop_group") for layer in layers):
        return None
    bases = [layer.base_layer for layer in layers]
    kinds = {
        (b.in_features, b.weight.dtype, b.weight.device, getattr(_quant_state(b.weight), "dtype", None)) for b in bases
    }
    if len(kinds) != 1 or any(b.bias is not None for b in bases):
        return None
    return LoraGroup(layers, names)


def patch_attention_group(attn: nn.Module) -> bool:
    layers = [getattr(attn, n, None) for n in ("q_proj", "k_proj", "v_proj")]
    if any(not hasattr(layer, "lora_A") for layer in layers):
        return False
    group = group_layers(layers)
    if group is None:
        return False
    for i, layer in enumerate(layers):
        layer._strop_group, layer._strop_group_index = group, i
        if not hasattr(layer, "_strop_forward"):
            layer._strop_forward = layer.forward
        layer.forward = types.MethodType(_grouped_forward, layer)
    return True
