"""LISA (Pan et al. 2024, "LISA: Layerwise Importance Sampling for Memory-Efficient Large Language Model
Fine-Tuning"): full-parameter training in which, at any time, only the embeddings, the LM head (and the
other weights outside the decoder blocks: final norm) plus γ randomly chosen decoder layers train; every
K steps a fresh set of γ layers is drawn uniformly without replacement, the rest are frozen.

Resumable by construction: the active set for step s is a pure function of (seed, s // K), computed at
every step in `on_step_start`, so a run resumed at step s trains the same layers as one that never
stopped. Under torchrun (FSDP2) the switch works as in one process: FSDP2 shards each parameter and
reduces only the gradients that exist (`distributed.trainable_changed` re-derives a layer's gradient
dtypes when it switches). The optimizer holds every parameter that can ever train; AdamW skips a parameter whose
gradient is None (frozen this period), so its moments and weight decay pause with it. The artifact is a
complete HF model folder.
"""

from __future__ import annotations

import random

from pydantic import Field
from torch import nn

from strop.models.blocks import decoder_layers
from strop.models.shapes import Shapes
from strop.run_types import RunConfig
from strop.runtime import distributed
from strop.strategies.base import StrategyParams
from strop.strategies.full import FullStrategy


class LisaParams(StrategyParams):
    lisa_n_layers: int = Field(
        2, gt=0, description="(lisa) γ: decoder layers trained at a time (besides embeddings and head)."
    )
    lisa_step_interval: int = Field(20, gt=0, description="(lisa) K: draw a new set of layers every K optimizer steps.")


def active_layers(n_layers: int, cfg: RunConfig, step: int) -> list[int]:
    """The γ layer indices that train at `step`: seeded by (seed, step // K) only."""
    period = step // cfg.lisa_step_interval
    rng = random.Random(f"lisa:{cfg.seed}:{period}")
    return sorted(rng.sample(range(n_layers), min(cfg.lisa_n_layers, n_layers)))


class LisaStrategy(FullStrategy):
    name = "lisa"
    params = LisaParams

    def trainable_estimate(self, cfg: RunConfig, shapes: Shapes) -> int:
        """What trains at any one time: everything outside the decoder layers, plus lisa_n_layers of them."""
        per_layer = shapes.layer_params / max(1, shapes.layers)
        return int(shapes.total - shapes.layer_params + min(cfg.lisa_n_layers, shapes.layers) * per_layer)

    def optimizer_bytes_estimate(self, cfg: RunConfig, shapes: Shapes, trainable: int) -> float:
        """Moments appear for every layer LISA ever samples, so they reach full AdamW size over a long run."""
        return 2 * self.trainable_dtype_bytes(cfg) * shapes.total

    def weight_bytes_estimate(self, cfg: RunConfig, shapes: Shapes, trainable: int) -> float:
        """As full fine-tuning; L2-SP keeps w0 for every layer LISA may sample, not only the active ones."""
        return super().weight_bytes_estimate(cfg, shapes, shapes.total)

    def adapt(self, model: nn.Module, cfg: RunConfig) -> nn.Module:
        for param in model.parameters():
            param.requires_grad_(True)
        self.on_step_start(model, 0, cfg)
        return model

    def on_step_start(self, model: nn.Module, step: int, cfg: RunConfig) -> None:
        _, layers = decoder_layers(model)
        active = set(active_layers(len(layers), cfg, step))
        changed = []
        for index, layer in enumerate(layers):
            params = list(layer.parameters())
            if any(p.requires_grad != (index in active) for p in params):
                changed.append(layer)
                for param in params:
                    param.requires_grad_(index in active)
        distributed.trainable_changed(changed)

    def trainable_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """Every parameter that can ever train (all of them): the optimizer and checkpoints need them."""
        return dict(model.named_parameters())

    def count_parameters(self, model: nn.Module) -> tuple[int, int]:
        """(trained at this moment: outside the blocks + the γ active layers, total)."""
        params = list(model.parameters())
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

    def describe(self, cfg: RunConfig) -> str:
        return f"gamma={cfg.lisa_n_layers} layers resampled every K={cfg.lisa_step_interval} steps"
