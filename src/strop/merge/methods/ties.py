"""TIES-merging: trim, elect sign, disjoint merge.

Yadav et al. 2023, "TIES-Merging: Resolving interference when merging models"
(https://arxiv.org/abs/2306.01708). Plain task arithmetic lets small, noisy updates and updates of
opposite sign cancel useful ones. TIES removes both kinds of interference:

1. Trim:  keep the top `density` fraction of each τ_k = θ_k − θ_base by magnitude, zero the rest.
2. Elect: per element, γ = sign(Σ_k w_k τ̂_k), the sign holding the most total (weighted) mass
   (γ = +1 on an exact tie).
3. Disjoint merge: average only the entries that agree with γ:
       τ = Σ_k [sign(w_k τ̂_k) = γ] w_k τ̂_k / Σ_k [sign(w_k τ̂_k) = γ] w_k
   (the division is skipped with `normalize: false`; where no entry agrees, τ = 0).

    θ = θ_base + λ τ

Weights are applied before the election, as mergekit does, so `weight` both scales a model's vote
and its contribution.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from strop.merge.methods.base import MergeInputs, MergeMethod, check_density

CHUNK = 1 << 22


def _magnitude_bits(values: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """|x| as int32 bit patterns, one CHUNK at a time (non-negative floats order like their bits)."""
    for start in range(0, values.numel(), CHUNK):
        yield start, values[start : start + CHUNK].view(torch.int32) & 0x7FFFFFFF


def _crossing(counts: torch.Tensor, k: int) -> tuple[int, int]:
    """The histogram bin holding the k-th largest entry, and how many entries lie in higher bins."""
    from_top = counts.flip(0).cumsum(0)
    j = int(torch.searchsorted(from_top, k))
    return counts.numel() - 1 - j, int(from_top[j - 1]) if j > 0 else 0


def top_k_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of exactly the k largest-magnitude entries of a flat float32 tensor.

    torch.topk on a 28M-entry embedding allocates several times the tensor. This is a two-pass
    radix select on the float bit patterns instead: a histogram of the high 16 bits finds the bin of
    the k-th largest magnitude, a histogram of the low 16 bits inside that bin finds its exact
    value, and a last pass marks everything above it, all in CHUNK-sized pieces. Among entries
    whose magnitude equals the threshold, the first ones by position are kept.
    """
    values = values.float().contiguous().reshape(-1)
    high_counts = torch.zeros(1 << 15, dtype=torch.int64)
    for _, bits in _magnitude_bits(values):
        high_counts += torch.bincount(bits >> 16, minlength=1 << 15)
    bucket, above = _crossing(high_counts, k)
    low_counts = torch.zeros(1 << 16, dtype=torch.int64)
    for _, bits in _magnitude_bits(values):
        low_counts += torch.bincount(bits[(bits >> 16) == bucket] & 0xFFFF, minlength=1 << 16)
    low, above_in_bucket = _crossing(low_counts, k - above)
    threshold = (bucket << 16) | low
    missing = k - above - above_in_bucket  # entries equal to the threshold still to keep
    mask = torch.empty(values.numel(), dtype=torch.bool)
    for start, bits in _magnitude_bits(values):
        piece = bits > threshold
        if missing > 0:
            equal = (bits == threshold).nonzero().reshape(-1)[:missing]
            piece[equal] = True
            missing -= equal.numel()
        mask[start : start + piece.numel()] = piece
    return mask


def trim_top_k(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Zero, in place, all but the k = max(1, ⌊density · n⌋) largest-magnitude entries of a float32 delta."""
    if density >= 1.0:
        return delta
    if density <= 0.0 or delta.numel() == 0:
        return delta.zero_()
    k = max(1, int(density * delta.numel()))
    mask = top_k_mask(delta.reshape(-1), k)
    return delta.masked_fill_(~mask.reshape(delta.shape), 0.0)


def elect_and_merge(deltas: list[torch.Tensor], weights: list[float], *, normalize: bool) -> torch.Tensor:
    """Steps 2 and 3: sign election by summed weighted mass, then the disjoint (weighted) mean.

    Every step is elementwise, so it runs over slices of CHUNK elements and writes each result into
    the first delta: the temporaries stay a few MB however large the tensor (consumes `deltas`).
    """
    flats = [d.contiguous().reshape(-1) for d in deltas]
    for start in range(0, flats[0].numel(), CHUNK):
        parts = [flat[start : start + CHUNK] for flat in flats]
        parts[0].copy_(_elect_and_merge_slice(parts, weights, normalize))
    return flats[0].reshape(deltas[0].shape)


def _elect_and_merge_slice(parts: list[torch.Tensor], weights: list[float], normalize: bool) -> torch.Tensor:
    weighted = [part * weight for part, weight in zip(parts, weights, strict=True)]
    positive = torch.stack(weighted).sum(dim=0) >= 0
    merged = torch.zeros_like(weighted[0])
    divisor = torch.zeros_like(weighted[0])
    for w_part, weight in zip(weighted, weights, strict=True):
        agree = torch.where(positive, w_part > 0, w_part < 0)
        merged += w_part * agree
        divisor += agree * weight
    if normalize:
        merged /= divisor.masked_fill_(divisor == 0, 1.0)
    return merged


def combine_ties(inputs: MergeInputs, deltas: list[torch.Tensor]) -> torch.Tensor:
    """θ_base + λ · elect_and_merge(deltas): shared by TIES and DARE-TIES (consumes `deltas`)."""
    assert inputs.base is not None
    merged = elect_and_merge(deltas, inputs.per_model("weight"), normalize=bool(inputs.params["normalize"]))
    return merged.mul_(float(inputs.params["lambda"])).add_(inputs.base)


def ties(inputs: MergeInputs) -> torch.Tensor:
    """Trim each task vector to its density, then elect signs and take the disjoint mean."""
    densities = inputs.per_model("density")
    deltas = inputs.task_vectors()
    for k, density in enumerate(densities):
        deltas[k] = trim_top_k(deltas[k], density)
    return combine_ties(inputs, deltas)


TIES = MergeMethod(
    name="ties",
    merge=ties,
    summary="trim task vectors to top density, elect sign, disjoint mean",
    base_role="task",
    global_params={"lambda": 1.0, "normalize": True},
    model_params={"weight": 1.0, "density": 1.0},
    check=check_density,
)
