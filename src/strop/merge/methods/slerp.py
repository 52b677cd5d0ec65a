"""SLERP: spherical linear interpolation between exactly two models.

Shoemake 1985, "Animating rotation with quaternion curves"; popularised for LLM merging by mergekit.
Each tensor is flattened to a vector. With Ω the angle between the two vectors (from their
normalised dot product) and t in [0, 1]:

    θ = sin((1 − t) Ω) / sin Ω · θ_0  +  sin(t Ω) / sin Ω · θ_1

t = 0 gives the first model (the base_model, if one is set) and t = 1 the second. Unlike a linear
average, SLERP keeps the norm from shrinking when the two vectors point in different directions.
When they are nearly parallel (|cos Ω| > 0.9995) sin Ω ≈ 0 and the formula is unstable, so it falls
back to linear interpolation (1 − t) θ_0 + t θ_1, which is what SLERP tends to there anyway.
"""

from __future__ import annotations

import math

import torch

from strop.errors import StropError
from strop.merge.methods.base import REQUIRED, MergeInputs, MergeMethod

DOT_THRESHOLD = 0.9995
EPS = 1e-8
CHUNK = 1 << 20


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """Dot product accumulated in float64 chunk by chunk: precise without a float64 copy of a tensor."""
    a, b = a.reshape(-1), b.reshape(-1)
    return sum(
        float(torch.dot(a[i : i + CHUNK].double(), b[i : i + CHUNK].double())) for i in range(0, a.numel(), CHUNK)
    )


def slerp_tensors(t: float, v0: torch.Tensor, v1: torch.Tensor, *, in_place: bool = False) -> torch.Tensor:
    """Interpolate two same-shaped tensors along the great circle between them.

    With `in_place` the result is written into v0, saving one tensor of memory.
    """
    out = v0 if in_place else v0.clone()
    norm0, norm1 = math.sqrt(_dot(v0, v0)), math.sqrt(_dot(v1, v1))
    if norm0 < EPS or norm1 < EPS:
        return out.lerp_(v1, t)
    cos_omega = max(-1.0, min(1.0, _dot(v0, v1) / (norm0 * norm1)))
    if abs(cos_omega) > DOT_THRESHOLD:
        return out.lerp_(v1, t)
    omega = math.acos(cos_omega)
    sin_omega = math.sin(omega)
    s0 = math.sin((1.0 - t) * omega) / sin_omega
    s1 = math.sin(t * omega) / sin_omega
    return out.mul_(s0).add_(v1, alpha=s1)


def slerp(inputs: MergeInputs) -> torch.Tensor:
    """SLERP of the two endpoints; the engine puts the base model (if any) first."""
    if len(inputs.tensors) != 2:
        raise StropError(f"slerp merges exactly two models, got {len(inputs.tensors)}")
    return slerp_tensors(float(inputs.params["t"]), inputs.tensors[0], inputs.tensors[1], in_place=True)


def _check(name: str, value: object) -> None:
    """t is a position between the two models; outside [0, 1] SLERP is not an interpolation."""
    if name == "t" and not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
        raise StropError(f"slerp t must be a number in [0, 1], got {value!r}")


SLERP = MergeMethod(
    name="slerp",
    merge=slerp,
    summary="spherical interpolation between two models by factor t",
    base_role="endpoint",
    min_models=2,
    max_models=2,
    global_params={"t": REQUIRED},
    check=_check,
)
