"""DARE: drop and rescale task-vector entries at random before combining them.

Yu et al. 2024, "Language models are Super Mario: absorbing abilities from homologous models as a
free lunch" (https://arxiv.org/abs/2311.03099). Fine-tuning deltas are highly redundant: dropping
each entry with probability p = 1 − density and rescaling the survivors by 1 / (1 − p) keeps the
expected task vector unchanged while making the models' deltas far less likely to collide:

    τ̃_k = m_k ⊙ τ_k / density,    m_k ~ Bernoulli(density) elementwise

dare_linear then does task arithmetic on τ̃_k (θ = θ_base + λ Σ w_k τ̃_k); dare_ties does TIES sign
election (by summed mass) and the disjoint sum on τ̃_k. Both default to `normalize: false` and
`rescale: true`, mergekit's defaults, because users bring mergekit configs: the same YAML must mean the
same merge (with `normalize: true`, as in ties, dare_ties at density 1 lands up to 3.7e-2 away from
mergekit on the parity test's tiny models). `rescale: false` keeps the survivors unscaled.

One deliberate difference remains: survivors are divided by `density`, the paper's elementwise unbiased
rescale, where mergekit 0.1.5 multiplies the kept entries by ‖τ‖₁ / ‖m ⊙ τ‖₁ (the L1 norm of the task
vector restored tensor by tensor). Both factors are ≈ 1/density for a large tensor; only the paper's
keeps E[τ̃] = τ entry by entry.

The mask is drawn from a generator seeded by the config `seed`, the tensor name and the model's
position, so a merge is reproducible. With density 1 nothing is dropped and the result equals
task_arithmetic / ties (with density 1 and the same `normalize`).
"""

from __future__ import annotations

import hashlib
from functools import partial

import torch

from strop.merge.methods.base import MergeInputs, MergeMethod, check_density
from strop.merge.methods.task_arithmetic import combine_linear
from strop.merge.methods.ties import combine_ties


def drop_and_rescale(
    delta: torch.Tensor, density: float, generator: torch.Generator, rescale: bool = True
) -> torch.Tensor:
    """Keep each entry with probability `density` and, with `rescale`, divide the survivors by `density` (in place)."""
    if density >= 1.0:
        return delta
    keep = torch.rand(delta.shape, generator=generator, dtype=torch.float32) < density
    delta.masked_fill_(~keep, 0.0)
    return delta.div_(density) if rescale else delta


def model_generator(seed: int, name: str, index: int) -> torch.Generator:
    """A generator that depends only on (seed, tensor name, model position), never on run order."""
    digest = hashlib.sha256(f"{seed}\0{name}\0{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def dropped_task_vectors(inputs: MergeInputs) -> list[torch.Tensor]:
    """DARE each model's task vector with its own density and reproducible mask."""
    deltas = inputs.task_vectors()
    rescale = bool(inputs.params["rescale"])
    for k, density in enumerate(inputs.per_model("density")):
        deltas[k] = drop_and_rescale(deltas[k], density, model_generator(inputs.seed, inputs.name, k), rescale)
    return deltas


def dare_linear(inputs: MergeInputs) -> torch.Tensor:
    """Task arithmetic on dropped-and-rescaled task vectors."""
    return combine_linear(inputs, dropped_task_vectors(inputs))


def dare_ties(inputs: MergeInputs) -> torch.Tensor:
    """TIES sign election and disjoint mean on dropped-and-rescaled task vectors."""
    return combine_ties(inputs, dropped_task_vectors(inputs))


_check = partial(check_density, allow_zero=False)

DARE_LINEAR = MergeMethod(
    name="dare_linear",
    merge=dare_linear,
    summary="random drop (p = 1 − density) + rescale, then task arithmetic",
    base_role="task",
    global_params={"lambda": 1.0, "normalize": False, "rescale": True},
    model_params={"weight": 1.0, "density": 1.0},
    check=_check,
)

DARE_TIES = MergeMethod(
    name="dare_ties",
    merge=dare_ties,
    summary="random drop (p = 1 − density) + rescale, then TIES sign election",
    base_role="task",
    global_params={"lambda": 1.0, "normalize": False, "rescale": True},
    model_params={"weight": 1.0, "density": 1.0},
    check=_check,
)
