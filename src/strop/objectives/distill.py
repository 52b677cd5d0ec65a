"""Knowledge distillation (Hinton et al. 2015; generalised KD, Agarwal et al. 2024).

A student learns from a frozen teacher that shares its tokenizer, on the response tokens of SFT data:

    L = α · CE(y, z_S) + (1 − α) · T² · D(softmax(z_T / T), softmax(z_S / T))

with D the forward KL  Σ p_T (log p_T − log p_S)  (mode covering, the classic choice), the reverse KL
Σ p_S (log p_S − log p_T)  (mode seeking), or the generalised Jensen–Shannon divergence with mixture
m = β p_T + (1 − β) p_S:  β KL(p_T ‖ m) + (1 − β) KL(p_S ‖ m). T² keeps the gradient scale of the soft
term independent of the temperature. Both terms are normalised over the response tokens of the whole
optimizer step, like SFT.

A teacher with another tokenizer (`distill_cross_tokenizer: auto` finds out, `uld` forces it) is
distilled with Universal Logit Distillation instead of D, at the positions where both tokenizations of
the text reach the same character (objectives/cross_tokenizer.py); the T² weighting stays.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal, cast

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from strop.data.tokenize import IGNORE
from strop.errors import StropError
from strop.objectives.base import model_inputs, shifted_token_logps
from strop.objectives.cross_tokenizer import aligned_positions, teacher_ends, token_ends, uld_distance
from strop.objectives.sft import SFTObjective
from strop.run_types import RunState

if TYPE_CHECKING:
    from transformers import PretrainedConfig


class DistillParams(BaseModel):
    distill_teacher: str | None = Field(
        None,
        description="Teacher model (alias, hub id, folder or GGUF); another tokenizer needs distill_cross_tokenizer.",
    )
    distill_alpha: float = Field(
        0.5, ge=0, le=1, description="Weight of the hard-label cross-entropy; 1 - alpha weighs the soft term."
    )
    distill_temperature: float = Field(2.0, gt=0, description="Softmax temperature T of both distributions.")
    distill_loss: Literal["forward_kl", "reverse_kl", "jsd"] = Field(
        "forward_kl", description="Divergence between teacher and student."
    )
    distill_jsd_beta: float = Field(0.5, gt=0, lt=1, description="Teacher weight of the JSD mixture.")
    distill_cross_tokenizer: Literal["auto", "uld", "off"] = Field(
        "auto",
        description="Teacher with another tokenizer: uld (Universal Logit Distillation on offset-aligned "
        "positions; replaces distill_loss), auto (uld when the vocabularies differ), off (refuse).",
    )


def token_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    kind: str = "forward_kl",
    beta: float = 0.5,
) -> torch.Tensor:
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


def distill_loss(
    token_logps: torch.Tensor, divergence: torch.Tensor, mask: torch.Tensor, alpha: float, temperature: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-example α·NLL + (1−α)·T²·D summed over response tokens, with both parts as metrics."""
    nll = -(token_logps * mask).sum(1)
    soft = (divergence * mask).sum(1)
    per_example = alpha * nll + (1 - alpha) * temperature**2 * soft
    return per_example, {"nll": float(nll.detach().sum()), "divergence": float(soft.detach().sum())}


def _other_tokenizer(
    teacher_path: str, student_tokenizer, teacher_vocab: int, student_vocab: int, trust_remote_code: bool
) -> bool:
    """Whether the teacher tokenizes differently: another vocabulary size, or the same size with other
    tokens. A teacher folder without tokenizer files of the same size is taken to share the student's."""
    from strop.models import load_tokenizer

    if teacher_vocab != student_vocab:
        return True
    try:
        teacher_tokenizer = load_tokenizer(teacher_path, trust_remote_code)
    except StropError:
        return False
    return teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab()


class DistillObjective(SFTObjective):
    name = "distill"
    params = DistillParams
    cross = False  # set by prepare_training: the teacher has another tokenizer (ULD)

    def prepare_training(self, run: RunState) -> None:
        from strop.models import load_model, load_tokenizer, resolve_model_path

        cfg = run.cfg
        self.cross = False
        if not cfg.distill_teacher:
            raise StropError("rl: distill needs distill_teacher (the teacher model)")
        path = resolve_model_path(cfg.distill_teacher, "distill_teacher")
        teacher = load_model(path, torch.float32, cfg.trust_remote_code)
        student_vocab: int = cast("PretrainedConfig", run.strategy.base_model(run.model).config).vocab_size
        if cfg.distill_cross_tokenizer == "off" and teacher.config.vocab_size != student_vocab:
            raise StropError(
                f"distill_teacher has vocabulary {teacher.config.vocab_size}, the student {student_vocab}: "
                "teacher and student must share a tokenizer (or set distill_cross_tokenizer: uld)"
            )
        mode = cfg.distill_cross_tokenizer
        if mode == "uld" or (
            mode == "auto"
            and _other_tokenizer(path, run.tokenizer, teacher.config.vocab_size, student_vocab, cfg.trust_remote_code)
        ):
            if cfg.sample_packing:
                raise StropError(
                    "distill_cross_tokenizer: packed rows cannot be re-tokenized for the teacher; "
                    "set sample_packing: false"
                )
            self.cross = True
            self.student_tokenizer, self.teacher_tokenizer = run.tokenizer, load_tokenizer(path, cfg.trust_remote_code)
        self.teacher = teacher.to(run.device).eval().requires_grad_(False)
        self.cfg = cfg

    def loss(self, model, batch, denominator):
        cfg = self.cfg
        student = model(**model_inputs(batch, model), use_cache=False).logits
        token_logps, mask = shifted_token_logps(student, batch["labels"])
        if self.cross:
            divergence, aligned = self.uld_divergence(student, batch)
            extra = {"aligned": aligned / denominator}
        else:
            with torch.no_grad():
                teacher = self.teacher(**model_inputs(batch, self.teacher), use_cache=False).logits
            divergence = token_divergence(
                student[:, :-1], teacher[:, :-1], cfg.distill_temperature, cfg.distill_loss, cfg.distill_jsd_beta
            )
            extra = {}
        per_example, metrics = distill_loss(token_logps, divergence, mask, cfg.distill_alpha, cfg.distill_temperature)
        loss = per_example.sum() / denominator
        return loss, {"loss": float(loss.detach()), **{k: v / denominator for k, v in metrics.items()}, **extra}

    def uld_divergence(self, student: torch.Tensor, batch) -> tuple[torch.Tensor, float]:
        """ULD per student position [B, L-1] (0 where no teacher position ends at the same character),
        and how many response positions were aligned. Position i predicts token i + 1, so it counts when
        that token is a response token."""
        mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"]))  # none: no row is padded
        rows = [ids[real.bool()].tolist() for ids, real in zip(batch["input_ids"], mask)]
        student_ends, teacher_rows = [], []
        for ids in rows:
            text, ends = token_ends(self.student_tokenizer, ids)
            student_ends.append(ends)
            teacher_rows.append(teacher_ends(self.teacher_tokenizer, text))
        width = max(len(ids) for ids, _ in teacher_rows)
        device = student.device
        ids = torch.zeros(len(rows), width, dtype=torch.long, device=device)
        attention = torch.zeros_like(ids)
        for b, (teacher_ids, _) in enumerate(teacher_rows):
            ids[b, : len(teacher_ids)] = torch.tensor(teacher_ids, device=device)
            attention[b, : len(teacher_ids)] = 1
        with torch.no_grad():
            teacher = self.teacher(input_ids=ids, attention_mask=attention, use_cache=False).logits
        targets = batch["labels"][:, 1:]
        picks = [
            (b, i, j)
            for b in range(len(rows))
            for i, j in aligned_positions(student_ends[b][:-1], teacher_rows[b][1][:-1])
            if targets[b, i] != IGNORE
        ]
        if not picks:
            return torch.zeros(targets.shape, device=device), 0.0
        rows_at, student_at, teacher_at = (torch.tensor(column, device=device) for column in zip(*picks))
        values = uld_distance(student[rows_at, student_at], teacher[rows_at, teacher_at], self.cfg.distill_temperature)
        zeros = torch.zeros(targets.shape, dtype=values.dtype, device=device)
        return zeros.index_put((rows_at, student_at), values), float(len(picks))
