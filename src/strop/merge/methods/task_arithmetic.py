"""Task arithmetic: add (or subtract) what fine-tuning taught each model.

Ilharco et al. 2023, "Editing models with task arithmetic" (https://arxiv.org/abs/2212.04089).
A task vector is τ_k = θ_k − θ_base. Adding task vectors to the base combines skills; a negative
weight subtracts one (e.g. to unlearn a behaviour):

    θ = θ_base + λ · Σ_k w_k τ_k            (÷ Σ_k w_k as well when `normalize: true`)

`weight` (w_k, per model, may be negative) defaults to 1 and `lambda` (global) to 1, so one
model with weight 1 gives that model back exactly.
"""

from __future__ import annotations

import torch

from strop.merge.methods.base import MergeInputs, MergeMethod, weighted_sum


def combine_linear(inputs: MergeInputs, deltas: list[torch.Tensor]) -> torch.Tensor:
    """θ_base + λ Σ w_k δ_k: shared by task arithmetic and DARE-linear (consumes `deltas`)."""
    assert inputs.base is not None
    mixed = weighted_sum(
        deltas, inputs.per_model("weight"), normalize=bool(inputs.params["normalize"]), what="task weights"
    )
    return mixed.mul_(float(inputs.params["lambda"])).add_(inputs.base)


def task_arithmetic(inputs: MergeInputs) -> torch.Tensor:
    """Base plus the weighted sum of the models' task vectors."""
    return combine_linear(inputs, inputs.task_vectors())


TASK_ARITHMETIC = MergeMethod(
    name="task_arithmetic",
    merge=task_arithmetic,
    summary="base + λ Σ w_k (θ_k − θ_base)",
    base_role="task",
    global_params={"lambda": 1.0, "normalize": False},
    model_params={"weight": 1.0},
)
