"""Language-model head + cross-entropy without the full logits: chunked over tokens, gradients formed
in the forward.

    loss_t = logsumexp(h_t Wᵀ) − (h_t Wᵀ)[y_t];   dlogits_t = softmax(h_t Wᵀ) − onehot(y_t)
    dh_t = dlogits_t W,   dW = Σ_t dlogits_tᵀ h_t

Why not the library path: transformers computes the logits of every position at once (tokens × vocab:
2048 × 128256 is 0.5 GB in bf16, 1 GB again in fp32 for the loss, and the same twice more for their
gradients), which is the peak of a Llama-3 step. Here one chunk of rows at a time goes through the
head, its fp32 logits are turned into probabilities and then into the logit gradient in place, and that
is multiplied straight into dh (and dW when the head trains). Only dh (tokens × hidden) outlives the
chunk; the backward just scales it by the incoming gradient. The logits are rounded to the head's dtype
before the fp32 softmax, as transformers does, so the loss is the same number.

On CUDA the softmax step is one Triton kernel per chunk: each row is read twice (online max and sum,
then the gradient) and the logit gradient is written over the bf16 logits, where the plain-PyTorch
path makes an fp32 copy and runs about eight elementwise passes over it (~9 GB of traffic a
1024-row chunk of a 128k vocabulary against ~0.8 GB). With the fp32 copy gone, a chunk holds twice the
rows for the same memory. A trained head's gradient is accumulated by `addmm_` in the head's own dtype
(cuBLAS adds in fp32 and rounds once a chunk, as Liger-Kernel does) instead of a matmul, an fp32 cast
and an add into an fp32 buffer per chunk. For the tied 1B Llama head in full fine-tuning that was
the largest gap to Liger-Kernel (bench/NOTES.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from strop.kernels._triton import HAS_TRITON, tl, triton, use_triton

IGNORE = -100


def _chunk_rows(vocab: int, itemsize: int = 4, budget_bytes: int = 512 * 2**20) -> int:
    """Rows per chunk so that a chunk's logits (`itemsize` bytes each) stay near `budget_bytes`."""
    rows = max(128, budget_bytes // (vocab * itemsize))
    return 1 << (rows.bit_length() - 1)


if HAS_TRITON:  # pragma: no cover - needs a GPU

    @triton.jit
    def _softmax_grad_rows(L, T, LOSS, vocab, stride, ignore, NEED_GRAD: tl.constexpr, BLOCK: tl.constexpr):
        """Row r of L (logits): LOSS[r] = lse − L[r, T[r]] (0 when ignored); with NEED_GRAD, L[r] is
        overwritten by softmax − onehot (zeros when ignored), in L's dtype."""
        row = tl.program_id(0).to(tl.int64)
        ptr = L + row * stride
        target = tl.load(T + row)
        valid = target != ignore
        m = -float("inf")
        d = 0.0
        for start in range(0, vocab, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            x = tl.load(ptr + cols, mask=cols < vocab, other=-float("inf")).to(tl.float32)
            m_new = tl.maximum(m, tl.max(x, 0))
            d = d * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), 0)
            m = m_new
        lse = m + tl.log(d)
        safe = tl.where(valid, target, 0)
        picked = tl.load(ptr + safe).to(tl.float32)
        tl.store(LOSS + row, tl.where(valid, lse - picked, 0.0))
        if NEED_GRAD:
            for start in range(0, vocab, BLOCK):
                cols = start + tl.arange(0, BLOCK)
                mask = cols < vocab
                x = tl.load(ptr + cols, mask=mask, other=0.0).to(tl.float32)
                p = tl.exp(x - lse) - tl.where(cols == safe, 1.0, 0.0)
                p = tl.where(valid, p, 0.0)
                tl.store(ptr + cols, p.to(L.dtype.element_ty), mask=mask)


def _softmax_grad_triton(logits: torch.Tensor, targets: torch.Tensor, need_grad: bool) -> torch.Tensor:
    """Per-row losses (fp32); `logits` becomes the logit gradient in place when `need_grad`."""
    rows, vocab = logits.shape
    loss = torch.empty(rows, device=logits.device, dtype=torch.float32)
    _softmax_grad_rows[(rows,)](
        logits, targets, loss, vocab, logits.stride(0), IGNORE, NEED_GRAD=need_grad, BLOCK=8192, num_warps=16
    )
    return loss


def _matmul_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """out = a @ b. Under autocast an fp32 head gives bf16 logits while `out` keeps h's fp32 (full
    fine-tuning through `strop train`), and matmul's `out=` refuses a dtype other than its result's."""
    if out.dtype == a.dtype == b.dtype:
        torch.matmul(a, b, out=out)
    else:
        out.copy_(a @ b)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, targets, chunk: int, head_dtype: torch.dtype):
        n = h.shape[0]
        acc = torch.float64 if h.dtype == torch.float64 else torch.float32
        need_dh, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_db = bias is not None and ctx.needs_input_grad[2]
        fast = use_triton(h) and h.dtype != torch.float64
        dh = torch.empty_like(h) if need_dh else None
        dw_dtype = head_dtype if fast else acc
        dw = torch.zeros(weight.shape, device=weight.device, dtype=dw_dtype) if need_dw else None
        db = torch.zeros(bias.shape, device=h.device, dtype=acc) if need_db else None
        total = torch.zeros((), device=h.device, dtype=acc)
        for start in range(0, n, chunk):
            hc, tc = h[start : start + chunk], targets[start : start + chunk]
            logits = hc @ weight.t()
            if bias is not None:
                logits += bias
            if fast:
                total += _softmax_grad_triton(logits, tc, need_dh or need_dw or need_db).sum()
                if need_dh:
                    _matmul_into(dh[start : start + chunk], logits, weight)
                if need_dw:
                    if dw.dtype == logits.dtype:
                        dw.addmm_(logits.t(), hc)
                    else:
                        dw += (logits.t() @ hc).to(dw.dtype)
                if need_db:
                    db += logits.to(acc).sum(0)
                continue
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
                _matmul_into(dh[start : start + chunk], g, weight)
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
        return dh, dw, db, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    chunk: int | None = None,
) -> torch.Tensor:
    """Summed next-token loss of `hidden @ weight.T` against `targets` (IGNORE = -100 rows count
    nothing), over any leading shape; divide by the token count for the mean."""
    h = hidden.reshape(-1, hidden.shape[-1])
    t = targets.reshape(-1)
    head_dtype = weight.dtype
    if weight.dtype != h.dtype:  # an fp32 head under autocast: compute in the activation dtype
        weight = weight.to(h.dtype)
    itemsize = h.element_size() if use_triton(h) else 4  # the plain path holds fp32 logits per chunk
    return _LinearCrossEntropy.apply(h, weight, bias, t, chunk or _chunk_rows(weight.shape[0], itemsize), head_dtype)


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """Position t predicts labels[t + 1]; the last position predicts nothing (as transformers)."""
    return F.pad(labels[..., 1:], (0, 1), value=IGNORE)


def _decoded(model: torch.nn.Module, input_ids, attention_mask, **kwargs) -> tuple[torch.Tensor, torch.nn.Module]:
    """The decoder's last hidden states and the output head of a transformers model (PEFT or not)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    out = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
    return (out[0] if isinstance(out, tuple) else out.last_hidden_state), head


def causal_lm_group_losses(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    groups: torch.Tensor,
    n_groups: int,
    attention_mask: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor:
    """Summed causal-LM loss per group (`groups`: a group id per token, like labels; a target counts in
    the group of its own token), shape (n_groups,); their sum is `causal_lm_loss(..., reduction="sum")`
    when every target has a group. Each group's positions go through the head alone, so the head sees
    each target position once, as in `causal_lm_loss`."""
    hidden, head = _decoded(model, input_ids, attention_mask, **kwargs)
    targets = shift_labels(labels).reshape(-1)
    owner = shift_labels(groups).reshape(-1)
    flat = hidden.reshape(-1, hidden.shape[-1])
    bias = getattr(head, "bias", None)
    sums = []
    for g in range(n_groups):
        rows = ((owner == g) & (targets != IGNORE)).nonzero().squeeze(1)
        sums.append(linear_cross_entropy(flat[rows], head.weight, targets[rows], bias) if len(rows) else flat.sum() * 0)
    return torch.stack(sums)


def causal_lm_loss(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    reduction: str = "mean",
    **kwargs,
) -> torch.Tensor:
    """The causal-LM loss of a transformers model (PEFT-wrapped or not) without materialising logits:
    runs the decoder, then `linear_cross_entropy` against the output head. `reduction="sum"` returns the
    summed loss (for strop's step-wide normalisation)."""
    hidden, head = _decoded(model, input_ids, attention_mask, **kwargs)
    targets = shift_labels(labels)
    total = linear_cross_entropy(hidden, head.weight, targets, getattr(head, "bias", None))
    if reduction == "sum":
        return total
    return total / (targets != IGNORE).sum().clamp(min=1)
