"""Knowledge distillation (Hinton et al. 2015; generalised KD, Agarwal et al. 2024).

A student learns from a frozen teacher that shares its tokenizer, on the response tokens of SFT data:

    L = α · CE(y, z_S) + (1 − α) · T² · D(softmax(z_T / T), softmax(z_S / T))

with D the forward KL  Σ p_T (log p_T − log p_S)  (mode covering, the classic choice), the reverse KL
Σ p_S (log p_S − log p_T)  (mode seeking), or the generalised Jensen–Shannon divergence with mixture
m = β p_T + (1 − β) p_S:  β KL(p_T ‖ m) + (1 − β) KL(p_S ‖ m). T² keeps the gradient scale of the soft
term independent of the temperature. Both terms are normalised over the response tokens of the whole
optimizer step, like SFT.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from strop.errors import StropError
from strop.objectives.base import model_inputs, shifted_token_logps
from strop.objectives.sft import SFTObjective


class DistillParams(BaseModel):
    distill_teacher: str | None = Field(None, description="Teacher model (alias, hub id, folder or GGUF); must share the student's tokenizer.")
    distill_alpha: float = Field(0.5, ge=0, le=1, description="Weight of the hard-label cross-entropy; 1 - alpha weighs the soft term.")
    distill_temperature: float = Field(2.0, gt=0, description="Softmax temperature T of both distributions.")
    distill_loss: Literal["forward_kl", "reverse_kl", "jsd"] = Field("forward_kl", description="Divergence between teacher and student.")
    distill_jsd_beta: float = Field(0.5, gt=0, lt=1, description="Teacher weight of the JSD mixture.")


def token_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                     kind: str = "forward_kl", beta: float = 0.5) -> torch.Tensor:
    """Per-position divergence between temperature-softened teacher and student distributions."""
    dtype = torch.promote_types(student_logits.dtype, torch.float32)  # at least fp32; float64 stays
    log_s = F.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits.to(dtype) / temperature, dim=-1)
    if kind == "forward_kl":
        return (log_t.exp() * (log_t - log_s)).sum(-1)
    if kind == "reverse_kl":
        return (log_s.exp() * (log_s - log_t)).sum(-1)
    log_m = torch.logsumexp(torch.stack([log_t + math.log(beta), log_s + math.log(1 - beta)]), dim=0)
    return beta * (log_t.exp() * (log_t - log_m)).sum(-1) + (1 - beta) * (log_s.exp() * (log_s - log_m)).sum(-1)


def distill_loss(token_logps: torch.Tensor, divergence: torch.Tensor, mask: torch.Tensor, alpha: float,
                 temperature: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-example α·NLL + (1−α)·T²·D summed over response tokens, with both parts as metrics."""
    nll = -(token_logps * mask).sum(1)
    soft = (divergence * mask).sum(1)
    per_example = alpha * nll + (1 - alpha) * temperature ** 2 * soft
    return per_example, {"nll": float(nll.detach().sum()), "divergence": float(soft.detach().sum())}


class DistillObjective(SFTObjective):
    name = "distill"
    params = DistillParams

    def prepare_training(self, run) -> None:
        from strop.models import load_model, resolve_model_path

        cfg = run.cfg
        if not cfg.distill_teacher:
            raise StropError("rl: distill needs distill_teacher (the teacher model)")
        teacher = load_model(resolve_model_path(cfg.distill_teacher), torch.float32, cfg.trust_remote_code)
        student_vocab = run.strategy.base_model(run.model).config.vocab_size
        if teacher.config.vocab_size != student_vocab:
            raise StropError(f"distill_teacher has vocabulary {teacher.config.vocab_size}, the student {student_vocab}: "
                             "teacher and student must share a tokenizer")
        self.teacher = teacher.to(run.device).eval().requires_grad_(False)
        self.cfg = cfg

    def loss(self, model, batch, denominator):
        cfg = self.cfg
        student = model(**model_inputs(batch, model), use_cache=False).logits
        with torch.no_grad():
            teacher = self.teacher(**model_inputs(batch, self.teacher), use_cache=False).logits
        token_logps, mask = shifted_token_logps(student, batch["labels"])
        divergence = token_divergence(student[:, :-1], teacher[:, :-1], cfg.distill_temperature,
                                      cfg.distill_loss, cfg.distill_jsd_beta)
        per_example, metrics = distill_loss(token_logps, divergence, mask, cfg.distill_alpha, cfg.distill_temperature)
        loss = per_example.sum() / denominator
        return loss, {"loss": float(loss.detach()), **{k: v / denominator for k, v in metrics.items()}}
