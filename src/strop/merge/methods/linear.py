"""Linear merge and model soup: averaging fine-tuned checkpoints of one architecture.

Wortsman et al. 2022, "Model soups: averaging weights of multiple fine-tuned models improves accuracy
without increasing inference time" (https://arxiv.org/abs/2203.05482). Models fine-tuned from the same
start tend to sit in one loss basin, so their average is often better than each of them.

    linear:      θ = Σ_k w_k θ_k / Σ_k w_k      (the division is skipped with `normalize: false`)
    model_soup:  θ = (1/K) Σ_k θ_k              (the paper's uniform soup)
"""

from __future__ import annotations

import torch

from strop.merge.methods.base import MergeInputs, MergeMethod, weighted_sum


def linear(inputs: MergeInputs) -> torch.Tensor:
    """Weighted average; normalising keeps the scale of the weights right whatever they sum to."""
    return weighted_sum(inputs.tensors, inputs.per_model("weight"), normalize=bool(inputs.params["normalize"]))


def model_soup(inputs: MergeInputs) -> torch.Tensor:
    """Uniform average: the soup needs no weights, which is its point."""
    return weighted_sum(inputs.tensors, [1.0] * len(inputs.tensors), normalize=True)


LINEAR = MergeMethod(
    name="linear",
    merge=linear,
    summary="weighted average of the models",
    global_params={"normalize": True},
    model_params={"weight": 1.0},
)

MODEL_SOUP = MergeMethod(
    name="model_soup",
    merge=model_soup,
    summary="uniform average of the models",
)
