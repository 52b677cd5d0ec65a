"""Router losses and health during training, without the objective knowing the model is an MoE.

Forward hooks on each block's router keep its logits while the loop records a micro-batch's loss pass;
passes without gradients (a reference model, evaluation) and recomputation during backward (gradient
checkpointing) happen outside recording and are ignored. The real-token mask of each forward comes from
its 2-D attention mask, or from the loop's batch (segment ids ≥ 0 for packed rows) when the forward gets a
document mask instead, so padding and packing filler never count.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from strop.moe import losses
from strop.moe.detect import MoeBlock, moe_blocks
from strop.run_types import RunConfig

DEFAULT_AUX, DEFAULT_Z = 0.01, 0.001


def batch_token_mask(batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """Real tokens of a collated batch: segment ids ≥ 0 (packed), else a 2-D attention mask."""
    if "segment_ids" in batch:
        return batch["segment_ids"] >= 0
    mask = batch.get("attention_mask")
    return mask.bool() if mask is not None and mask.dim() == 2 else None


class RouterMonitor:
    """Collects router logits of recorded forwards; turns them into the weighted router loss and, per
    optimizer step, into per-layer health metrics."""

    def __init__(self, model: nn.Module, blocks: list[MoeBlock], aux_coef: float, z_coef: float, warn_below: float):
        self.blocks, self.aux_coef, self.z_coef, self.warn_below = blocks, aux_coef, z_coef, warn_below
        self.recording_on = False
        self.batch_mask: torch.Tensor | None = None
        self.forward_mask: torch.Tensor | None = None
        self.logits: list[list[tuple[torch.Tensor, torch.Tensor | None]]] = [[] for _ in blocks]
        self.warned: set[int] = set()
        self._reset_health()
        monitor = self  # closures, not bound methods: a deep-copied model must not copy the monitor

        def inputs(module, args, kwargs):
            monitor.forward_mask = monitor._mask_for(args, kwargs)

        def routed(index):
            def hook(module, args, output):
                if monitor.recording_on and torch.is_grad_enabled():
                    logits = output[0] if isinstance(output, tuple) else output
                    mask = monitor.forward_mask
                    monitor.logits[index].append(
                        (logits, mask if mask is not None and mask.numel() == logits.shape[0] else None)
                    )

            return hook

        self.handles = [model.register_forward_pre_hook(inputs, with_kwargs=True)]
        self.handles += [b.router.register_forward_hook(routed(i)) for i, b in enumerate(blocks)]

    def _mask_for(self, args, kwargs) -> torch.Tensor | None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            return mask.bool()
        if self.batch_mask is not None and ids is not None and self.batch_mask.shape == ids.shape:
            return self.batch_mask
        return None

    def _reset_health(self) -> None:
        self.counts: list[torch.Tensor | None] = [None] * len(self.blocks)
        self.entropy: list[float | torch.Tensor] = [0.0] * len(self.blocks)
        self.tokens: list[int | torch.Tensor] = [0] * len(self.blocks)

    @contextmanager
    def recording(self, batch: dict[str, torch.Tensor]):
        """Record the router logits of the loss pass over `batch`."""
        self.batch_mask, self.recording_on = batch_token_mask(batch), True
        try:
            yield
        finally:
            self.recording_on = False

    def take(self, share: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The recorded pass's router loss times `share` (1/micro-batches), its metrics, and health sums."""
        aux_terms, z_terms = [], []
        for index, (block, recorded) in enumerate(zip(self.blocks, self.logits)):
            for logits, mask in recorded:
                aux_terms.append(losses.load_balancing_loss(logits, mask, block.top_k))
                z_terms.append(losses.z_loss(logits, mask))
                self._add_health(index, *losses.health_sums(logits, mask, block.top_k))
        self.logits = [[] for _ in self.blocks]
        if not aux_terms:
            return torch.zeros(()), {}
        aux, z = torch.stack(aux_terms).mean(), torch.stack(z_terms).mean()
        loss = (self.aux_coef * aux + self.z_coef * z) * share
        return loss, {"moe_aux_loss": aux.detach() * share, "moe_z_loss": z.detach() * share}

    def _add_health(self, index: int, counts: torch.Tensor, entropy: torch.Tensor, tokens: torch.Tensor) -> None:
        """Device tensors added up: read on the host once a step, in finish_step."""
        self.counts[index] = counts if self.counts[index] is None else self.counts[index] + counts
        self.entropy[index] = self.entropy[index] + entropy
        self.tokens[index] = self.tokens[index] + tokens

    def finish_step(self, report=print) -> dict:
        """Per-layer health of the step (`moe_layers`) and its summaries; warns through `report` when a
        layer's load entropy falls below the threshold (again only after it recovered)."""
        layers = [
            losses.health(c.cpu(), float(e), float(t))
            for c, e, t in zip(self.counts, self.entropy, self.tokens)
            if c is not None
        ]
        self._reset_health()
        if not layers:
            return {}
        for index, layer in enumerate(layers):
            if layer["load_entropy"] < self.warn_below and index not in self.warned:
                self.warned.add(index)
                report(
                    f"strop: warning: router collapse in MoE layer {index}: expert-load entropy "
                    f"{layer['load_entropy']:.2f} < {self.warn_below} (load {layer['load']}); raise moe_aux_loss_coef"
                )
            elif layer["load_entropy"] >= self.warn_below:
                self.warned.discard(index)
        return {
            "moe_load_entropy_min": min(x["load_entropy"] for x in layers),
            "moe_router_entropy_mean": sum(x["router_entropy"] for x in layers) / len(layers),
            "moe_starved_experts": sum(x["starved"] for x in layers),
            "moe_layers": layers,
        }

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def attach(model: nn.Module, cfg: RunConfig) -> RouterMonitor | None:
    """A monitor on `model` (the transformers model under any adapter wrapper), or None if it has no
    MoE blocks. transformers' own aux loss is switched off so that it is never counted twice."""
    blocks = moe_blocks(model)
    if not blocks:
        return None
    config = model.config
    if getattr(config, "output_router_logits", False):
        config.output_router_logits = False
    aux = (
        cfg.moe_aux_loss_coef
        if cfg.moe_aux_loss_coef is not None
        else getattr(config, "router_aux_loss_coef", DEFAULT_AUX)
    )
    z = cfg.moe_z_loss_coef if cfg.moe_z_loss_coef is not None else getattr(config, "router_z_loss_coef", DEFAULT_Z)
    return RouterMonitor(model, blocks, float(aux), float(z), cfg.moe_entropy_warning)
