"""Router losses and router health, as pure functions of one layer's router logits and a token mask.

Load-balancing auxiliary loss (Fedus et al. 2021, "Switch Transformers", eq. 4; top-k as in GShard):

    L_aux = E · Σ_e f_e · p_e

f_e the share of the real tokens' top-k assignments that go to expert e (Σ_e f_e = 1), p_e the mean
router probability of e over the real tokens. It is 1 when routing is uniform and E when one expert takes
everything; the gradient flows through p_e only. transformers' `load_balancing_loss_func` counts f_e
per top-k slot, so its value is k times this one.

Router z-loss (Zoph et al. 2022, "ST-MoE", eq. 5): the mean over real tokens of logsumexp(logits)²,
which keeps router logits small and the softmax numerically tame.

Router health: per-token router entropy (how sure the router is), the load shares f_e, the entropy of
those shares (1 = balanced, 0 = every token to one expert, both normalised by log E), and starved
experts (load below a tenth of the fair share 1/E). Padding and packing filler never count: every
reduction is over the mask.
"""

from __future__ import annotations

import math
from typing import TypedDict

import torch

#: An expert is starved when its load share is below this fraction of the fair share 1/E.
STARVED_FRACTION = 0.1


def _flat(logits: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, E) float logits and (N,) weights, 1 for real tokens and 0 elsewhere. Masking by weight rather
    than by indexing keeps the device from waiting for the host."""
    logits = logits.reshape(-1, logits.shape[-1]).float()
    weights = torch.ones(logits.shape[0], device=logits.device) if mask is None else mask.reshape(-1).to(logits)
    return logits, weights


def expert_counts(logits: torch.Tensor, weights: torch.Tensor, top_k: int) -> torch.Tensor:
    """Top-k assignments of the weighted tokens per expert (E,)."""
    chosen = logits.topk(top_k, dim=-1).indices
    return torch.zeros(logits.shape[-1], device=logits.device).index_add_(
        0, chosen.reshape(-1), weights.repeat_interleave(top_k)
    )


def load_balancing_loss(logits: torch.Tensor, mask: torch.Tensor | None, top_k: int) -> torch.Tensor:
    """L_aux = E · Σ_e f_e p_e over the real tokens of one layer's (…, E) router logits."""
    logits, weights = _flat(logits, mask)
    tokens = weights.sum().clamp(min=1)
    with torch.no_grad():
        f = expert_counts(logits, weights, top_k) / (tokens * top_k)
    p = (logits.softmax(dim=-1) * weights[:, None]).sum(dim=0) / tokens
    return logits.shape[-1] * (f * p).sum()


def z_loss(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """ST-MoE router z-loss: mean over real tokens of logsumexp(logits)²."""
    logits, weights = _flat(logits, mask)
    return (logits.logsumexp(dim=-1).pow(2) * weights).sum() / weights.sum().clamp(min=1)


@torch.no_grad()
def health_sums(
    logits: torch.Tensor, mask: torch.Tensor | None, top_k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sums that add up over micro-batches, all device tensors: per-expert top-k counts (E,), summed
    per-token router entropy (nats), real token count."""
    logits, weights = _flat(logits, mask)
    logp = logits.log_softmax(dim=-1)
    entropy = (-(logp.exp() * logp).sum(dim=-1) * weights).sum()
    return expert_counts(logits, weights, top_k), entropy, weights.sum()


class LayerHealth(TypedDict):
    load: list[float]
    load_entropy: float
    router_entropy: float
    starved: int


def health(counts: torch.Tensor, entropy_sum: float, tokens: float) -> LayerHealth:
    """One layer's health from `health_sums` totals: load shares, normalised load and router entropy,
    starved experts."""
    num_experts = counts.shape[0]
    shares = counts / counts.sum().clamp(min=1)
    nonzero = shares[shares > 0]
    load_entropy = float(-(nonzero * nonzero.log()).sum()) / math.log(num_experts)
    return {
        "load": [round(float(s), 4) for s in shares],
        "load_entropy": load_entropy,
        "router_entropy": float(entropy_sum) / max(1.0, float(tokens)) / math.log(num_experts),
        "starved": int((shares < STARVED_FRACTION / num_experts).sum()),
    }
