"""NEFTune (Jain et al. 2023, "NEFTune: Noisy Embeddings Improve Instruction Finetuning").

During training only, uniform noise is added to the input embeddings:

    X_emb ← X_emb + (α / sqrt(L · d)) · ε,   ε ~ Uniform(-1, 1)^{L×d}

with L the sequence length of the batch and d the embedding width. It composes with every strategy:
the base `Strategy.apply` installs a forward hook on the model's input embedding module, so no strategy
and no objective has to know about it. The hook adds noise only while the module is in training mode
and autograd is recording, so evaluation, reference log-probs computed under no_grad, and generation
(`model.eval()` + no_grad) see the clean embeddings.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_HOOK_ATTR = "_strop_neftune_handle"


def _noise_hook(alpha: float):
    def hook(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
        if not (module.training and torch.is_grad_enabled()) or output.dim() < 2:
            return output
        length, dim = output.shape[-2], output.shape[-1]
        bound = alpha / math.sqrt(length * dim)
        return output + torch.empty_like(output).uniform_(-bound, bound)

    return hook


def input_embeddings(model: nn.Module) -> nn.Module:
    """The token embedding module, found through PEFT and transformers wrappers."""
    for candidate in (model, getattr(model, "get_base_model", lambda: None)()):
        if candidate is not None and hasattr(candidate, "get_input_embeddings"):
            module = candidate.get_input_embeddings()
            if module is not None:
                return module
    raise ValueError("NEFTune: this model exposes no input embeddings (get_input_embeddings)")


def install_neftune(model: nn.Module, alpha: float | None) -> None:
    """Add (or replace, or with alpha None/0 remove) the NEFTune hook on the input embeddings."""
    embeddings = input_embeddings(model)
    old = getattr(embeddings, _HOOK_ATTR, None)
    if old is not None:
        old.remove()
        delattr(embeddings, _HOOK_ATTR)
    if alpha:
        setattr(embeddings, _HOOK_ATTR, embeddings.register_forward_hook(_noise_hook(float(alpha))))
