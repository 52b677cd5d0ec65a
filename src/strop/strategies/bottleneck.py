"""`adapter: houlsby` and `adapter: pfeiffer`: bottleneck adapters on a frozen base; the layer, its
placements and its artifact are in strop/models/bottleneck.py (below this floor, so that loading a
saved adapter for chat and eval needs no strategy)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Literal

from pydantic import Field
from torch import nn

from strop.models import bottleneck
from strop.models.shapes import Shapes
from strop.run_types import RunConfig
from strop.strategies.base import Strategy, StrategyParams, write_quantization_note


class BottleneckParams(StrategyParams):
    bottleneck_reduction_factor: int = Field(
        16, gt=0, description="(houlsby, pfeiffer) Bottleneck width = hidden_size / this factor."
    )
    bottleneck_non_linearity: Literal["relu", "gelu", "silu", "tanh"] = Field(
        "relu", description="(houlsby, pfeiffer) Non-linearity between the down and up projections."
    )


class HoulsbyStrategy(Strategy):
    """Adapters after the attention and after the feed-forward block of every decoder layer."""

    name = "houlsby"
    params = BottleneckParams
    supports_quantized_base = True
    saves_trainable_only = True
    adds_parameters = True
    artifact_kind = "bottleneck adapter (strop format; not mergeable)"

    def trainable_estimate(self, cfg: RunConfig, shapes: Shapes) -> int:
        """Per adapted sublayer: W_down (b × d) + b_down + W_up (d × b) + b_up, b = d // reduction."""
        d = shapes.hidden
        b = max(1, d // cfg.bottleneck_reduction_factor)
        return shapes.layers * len(bottleneck.PLACEMENTS[self.name]) * (2 * d * b + b + d)

    def adapt(self, model: nn.Module, cfg: RunConfig) -> nn.Module:
        model.requires_grad_(False)
        bottleneck.add_adapters(model, self.name, cfg.bottleneck_reduction_factor, cfg.bottleneck_non_linearity)
        model._strop_base_path = cfg.base_model  # type: ignore[assignment]  # mypy types module attributes as Tensor | Module
        return model

    def reference_context(self, model: nn.Module) -> AbstractContextManager:
        """The adapters switched off: the frozen base is the reference policy."""
        return bottleneck.adapters_disabled(model)

    def kernel_options(self, cfg: RunConfig):
        return None  # the adapters run in forward hooks that strop's fused kernels would bypass

    def describe(self, cfg: RunConfig) -> str:
        where = " and ".join(p.replace("_", "-") for p in bottleneck.PLACEMENTS[self.name])
        return f"after {where}, reduction {cfg.bottleneck_reduction_factor}, {cfg.bottleneck_non_linearity}"

    def save(self, model: nn.Module, tokenizer, out_dir: Path) -> None:
        bottleneck.save(model, out_dir, getattr(model, "_strop_base_path", ""))
        tokenizer.save_pretrained(out_dir)
        write_quantization_note(model, out_dir)


class PfeifferStrategy(HoulsbyStrategy):
    """One adapter per decoder layer, after the feed-forward block."""

    name = "pfeiffer"
