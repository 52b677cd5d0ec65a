"""Bottleneck adapters (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP"; Pfeiffer
et al. 2021, "AdapterFusion"): a small residual MLP inserted after a sublayer's output,

    h ← h + W_up · f(W_down · h + b_down) + b_up,     W_down ∈ R^{b×d}, W_up ∈ R^{d×b}, b = d / reduction

with f a non-linearity. W_up and b_up start at zero, so the adapted model starts exactly as the base.
Houlsby places one after the attention block and one after the feed-forward block of every layer;
Pfeiffer only after the feed-forward block (half the parameters, about the same quality in their
study). Here the adapter sits on the sublayer's output before the decoder layer adds its residual.

Not mergeable: f sits between the two projections, so no weight matrix of the base equals h ↦ h +
W_up f(W_down h) (LoRA and IA3 are linear in h and fold into W; these do not). The artifact is strop's
own: bottleneck_config.json (placement, sizes, the adapted module names, the base) and
bottleneck_adapter.safetensors; `load` puts it back onto a freshly loaded base. The adapter is a child
module of the sublayer it follows and is applied by a forward hook, so the base's parameter names stay
as they are.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from strop.errors import StropError
from strop.models.blocks import decoder_layers

CONFIG_FILE, WEIGHTS_FILE = "bottleneck_config.json", "bottleneck_adapter.safetensors"
CHILD = "bottleneck_adapter"
NON_LINEARITIES: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}
#: Sublayer names of a decoder layer, as transformers' architectures call them.
ATTENTION = ("self_attn", "attn", "attention", "self_attention")
FEED_FORWARD = ("mlp", "feed_forward", "block_sparse_moe", "ffn")
PLACEMENTS = {"houlsby": ("attention", "feed_forward"), "pfeiffer": ("feed_forward",)}
NOT_MERGEABLE = (
    "bottleneck adapters (houlsby, pfeiffer) put a non-linearity between their two projections, "
    "h + W_up f(W_down h), so no weight matrix of the base equals them and they cannot be merged; "
    "strop chat and strop eval load the adapter folder as it is"
)


class BottleneckAdapter(nn.Module):
    def __init__(self, dim: int, reduction_factor: int, non_linearity: str, device=None):
        super().__init__()
        width = max(1, dim // reduction_factor)
        self.down = nn.Linear(dim, width, device=device)
        self.act = NON_LINEARITIES[non_linearity]()
        self.up = nn.Linear(width, dim, device=device)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.enabled = True

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = h.to(self.down.weight.dtype)
        return h + self.up(self.act(self.down(x))).to(h.dtype)


def _apply_adapter(module: nn.Module, args, output):
    adapter = getattr(module, CHILD)
    if not adapter.enabled:
        return output
    if isinstance(output, tuple):  # attention returns (hidden states, weights, ...)
        return (adapter(output[0]), *output[1:])
    return adapter(output)


def sublayers(model: nn.Module, placement: str) -> list[str]:
    """Qualified names of the sublayers `placement` adapts, one or two per decoder layer."""
    prefix, layers = decoder_layers(model, language_only=True)
    kinds = {"attention": ATTENTION, "feed_forward": FEED_FORWARD}
    names = []
    for index, layer in enumerate(layers):
        children = dict(layer.named_children())
        for kind in PLACEMENTS[placement]:
            found = next((n for n in kinds[kind] if n in children), None)
            if found is None:
                raise StropError(
                    f"adapter: {placement} needs a {kind.replace('_', '-')} sublayer in each decoder layer; "
                    f"{type(layer).__name__} has {', '.join(children)} (looked for {', '.join(kinds[kind])})"
                )
            names.append(f"{prefix}.{index}.{found}")
    return names


def add_adapters(model: nn.Module, placement: str, reduction_factor: int, non_linearity: str) -> list[str]:
    """Attach an adapter after every sublayer `placement` names; returns their names."""
    if non_linearity not in NON_LINEARITIES:
        raise StropError(f"bottleneck_non_linearity: '{non_linearity}' is not one of {', '.join(NON_LINEARITIES)}")
    config = getattr(model, "config", None)
    dim = getattr(config.get_text_config() if hasattr(config, "get_text_config") else config, "hidden_size", None)
    if not dim:
        raise StropError(
            f"adapter: {placement} needs the model's hidden_size, which {type(model).__name__}'s config lacks"
        )
    names = sublayers(model, placement)
    for name in names:
        module = model.get_submodule(name)
        device = next(module.parameters()).device
        module.add_module(CHILD, BottleneckAdapter(dim, reduction_factor, non_linearity, device))
        module.register_forward_hook(_apply_adapter)
    model._strop_bottleneck = {  # type: ignore[assignment]
        "placement": placement,
        "reduction_factor": reduction_factor,
        "non_linearity": non_linearity,
        "modules": names,
    }
    return names


def adapters(model: nn.Module) -> list[BottleneckAdapter]:
    return [m for m in model.modules() if isinstance(m, BottleneckAdapter)]


@contextmanager
def adapters_disabled(model: nn.Module):
    """The base model alone (the reference policy of preference and RL objectives)."""
    found = adapters(model)
    for adapter in found:
        adapter.enabled = False
    try:
        yield model
    finally:
        for adapter in found:
            adapter.enabled = True


def save(model: nn.Module, out_dir: Path, base_model: str) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if f".{CHILD}." in k}
    save_file(state, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    settings = dict(model.__dict__["_strop_bottleneck"])
    (out_dir / CONFIG_FILE).write_text(json.dumps({"base_model": base_model, **settings}, indent=1) + "\n")


def read_config(folder: Path) -> dict:
    path = Path(folder) / CONFIG_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StropError(f"{path}: not readable JSON ({err})") from err
    missing = [k for k in ("base_model", "placement", "reduction_factor", "non_linearity") if k not in meta]
    if missing or meta.get("placement") not in PLACEMENTS:
        raise StropError(
            f"{path}: not a bottleneck adapter config (missing or bad: {', '.join(missing) or 'placement'})"
        )
    return meta


def load(model: nn.Module, folder: Path) -> nn.Module:
    """Put a saved bottleneck adapter back onto a freshly loaded base `model`."""
    from safetensors.torch import load_file

    meta = read_config(folder)
    names = add_adapters(model, meta["placement"], meta["reduction_factor"], meta["non_linearity"])
    weights = load_file(str(Path(folder) / WEIGHTS_FILE))
    expected = {k for k in model.state_dict() if f".{CHILD}." in k}
    if set(weights) != expected or meta.get("modules", names) != names:
        raise StropError(
            f"{folder}: {WEIGHTS_FILE} does not fit {type(model).__name__} "
            f"({len(weights)} tensors saved, {len(expected)} expected): was it trained on another base model?"
        )
    try:
        model.load_state_dict(weights, strict=False)
    except RuntimeError as err:
        raise StropError(f"{folder}: {WEIGHTS_FILE} does not fit the base model: {' '.join(str(err).split())}") from err
    return model
