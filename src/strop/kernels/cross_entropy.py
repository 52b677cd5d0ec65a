"""Language-model head + cross-entropy without the full logits: chunked over tokens, gradients formed
in the forward.

    loss_t = logsumexp(h_t Wᵀ) − (h_t Wᵀ)[y_t];   dlogits_t = softmax(h_t Wᵀ) − onehot(y_t)
    dh_t = dlogits_t W,   dW = Σ_t dlogits_tᵀ h_t

Why not the library path: transformers computes the logits of every position at once (tokens × vocab:
2048 × 128256 is 0.5 GB in bf16, 1 GB again in fp32 for the loss, and the same twice more for their
gradients), which is the peak of a Llama-3 step. Here one chunk of rows at a time goes through the
head, its fp32 logits are turned into probabilities and then into the logit gradient in place, and that
is multiplied straight into dh (and dW when the head trains). Only dh (tokens × hidden) outlives the
chunk; the backward just scales it by the incoming gradient. The matmuls dominate, so plain PyTorch
ops on the chunk suffice: no Triton needed. The logits are rounded to the head's dtype before the
fp32 softmax, as transformers does, so the loss is the same number.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def _chunk_rows(vocab: int, budget_bytes: int = 512 * 2**20) -> int:
    """Rows per chunk so that a chunk's fp32 logits stay near `budget_bytes`."""
    rows = max(128, budget_bytes // (vocab * 4))
    return 1 << (rows.bit_length() - 1)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, targets, chunk: int):
        n = h.shape[0]
        acc = torch.float64 if h.dtype == torch.float64 else torch.float32
        need_dh, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_db = bias is not None and ctx.needs_input_grad[2]
        dh = torch.empty_like(h) if need_dh else None
        dw = torch.zeros(weight.shape, device=weight.device, dtype=acc) if need_dw else None
        db = torch.zeros(bias.shape, device=h.device, dtype=acc) if need_db else None
        total = torch.zeros((), device=h.device, dtype=acc)
        for start in range(0, n, chunk):
            hc, tc = h[start:start + chunk], targets[start:start + chunk]
            logits = hc @ weight.t()
            if bias is not None:
                logits += bias
            logits = logits.to(acc)
            valid = tc != IGNORE
            safe = tc.masked_fill(~valid, 0).unsqueeze(1)
            lse = torch.logsumexp(logits, dim=-1)
            total += ((lse - logits.gather(1, safe).squeeze(1)) * valid).sum()
            if not (need_dh or need_dw or need_db):
                continue
            probs = logits.sub_(lse.unsqueeze(1)).exp_()
            probs.scatter_add_(1, safe, -valid.unsqueeze(1).to(probs.dtype))
            probs.mul_(valid.unsqueeze(1))
            g = probs.to(h.dtype)
            del probs, logits
            if need_dh:
                torch.matmul(g, weight, out=dh[start:start + chunk])
            if need_dw:
                dw += (g.t() @ hc).to(acc)
            if need_db:
                db += g.to(acc).sum(0)
        ctx.save_for_backward(dh, dw, db)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx, grad):
        dh, dw, db = ctx.saved_tensors
        wdt, bdt = ctx.dtypes
        dh = dh * grad.to(dh.dtype) if dh is not None else None
        dw = (dw * grad).to(wdt) if dw is not None else None
        db = (db * grad).to(bdt) if db is not None else None
        return dh, dw, db, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         bias: torch.Tensor | None = None, chunk: int | None = None) -> torch.Tensor:
    """Summed next-token loss of `hidden @ weight.T` against `targets` (IGNORE = -100 rows count
    nothing), over any leading shape; divide by the token count for the mean."""
    h = hidden.reshape(-1, hidden.shape[-1])
    t = targets.reshape(-1)
    if weight.dtype != h.dtype:  # an fp32 head under autocast: compute in the activation dtype
        weight = weight.to(h.dtype)
    return _LinearCrossEntropy.apply(h, weight, bias, t, chunk or _chunk_rows(weight.shape[0]))


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """Position t predicts labels[t + 1]; the last position predicts nothing (as transformers)."""
    return F.pad(labels[..., 1:], (0, 1), value=IGNORE)


def causal_lm_loss(model: torch.nn.Module, input_ids: torch.Tensor, labels: torch.Tensor,
                   attention_mask: torch.Tensor | None = None, reduction: str = "mean", **kwargs) -> torch.Tensor:
    """The causal-LM loss of a transformers model (PEFT-wrapped or not) without materialising logits:
    runs the decoder, then `linear_cross_entropy` against the output head. `reduction="sum"` returns the
    summed loss (for strop's step-wide normalisation)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    out = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
    hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
    targets = shift_labels(labels)
    total = linear_cross_entropy(hidden, head.weight, targets, getattr(head, "bias", None))
    if reduction == "sum":
        return total
    return total / (targets != IGNORE).sum().clamp(min=1)
