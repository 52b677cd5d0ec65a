"""Pair objectives (DPO family, CPO, SimPO / CPO-SimPO, ORPO), KTO and distillation divergences against TRL.

TRL's losses live in trainer methods. Each is called unbound on a SimpleNamespace holding the attributes it
reads, with a stub model that returns fixed float64 logits (or, for DPOTrainer's fused head, the per-token
log-probs of those logits). strop runs its real objective's loss() on the same logits through a stub model.
strop computes log-probs in float32, so the tolerance is 1e-5; pure functions fed float64 get 1e-6.

Deliberate differences (README, "Parity with the reference implementations") are tested as such: ORPO's
NLL term, and the CPO / CPO-SimPO NLL normalisation, which agree with TRL when the chosen replies have
equal lengths.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from strop.objectives.cpo import CPOObjective
from strop.objectives.distill import token_divergence
from strop.objectives.dpo import DPOObjective
from strop.objectives.kto import KTOObjective
from strop.objectives.orpo import ORPOObjective
from strop.objectives.simpo import SimPOObjective

REASON = "TRL is a test-only reference: `make test` installs it"
dpo_trainer = pytest.importorskip("trl.trainer.dpo_trainer", reason=REASON)
kto_trainer = pytest.importorskip("trl.trainer.kto_trainer", reason=REASON)
cpo_trainer = pytest.importorskip("trl.experimental.cpo.cpo_trainer", reason=REASON)
orpo_trainer = pytest.importorskip("trl.experimental.orpo.orpo_trainer", reason=REASON)
gkd_trainer = pytest.importorskip("trl.experimental.gkd.gkd_trainer", reason=REASON)

PROMPT, VOCAB, PAD = 3, 13, 0
CHOSEN, REJECTED = [4, 2, 5, 3], [3, 5, 1, 4]
WIDTH = PROMPT + max(CHOSEN + REJECTED)
ATOL = 1e-5


class _Accelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather(x):
        return x

    gather_for_metrics = gather


def pair_data(seed: int, chosen: list[int] = CHOSEN):
    """Random float64 logits for 2B right-padded sequences (chosen first), the token ids and reply masks."""
    generator = torch.Generator().manual_seed(seed)
    lengths = chosen + REJECTED
    ids = torch.randint(1, VOCAB, (len(lengths), WIDTH), generator=generator)
    reply = torch.zeros(len(lengths), WIDTH, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, PROMPT + n :] = PAD
        reply[i, PROMPT : PROMPT + n] = 1
    ids[len(chosen) :, :PROMPT] = ids[: len(chosen), :PROMPT]  # a pair shares its prompt
    logits = torch.randn(len(lengths), WIDTH, VOCAB, generator=generator, dtype=torch.float64)
    return logits, ids, reply


def logits_model(logits: torch.Tensor, ids: torch.Tensor | None = None):
    """A model that returns fixed logits: all of them, or (given the full ids) the rows of the ids it is fed."""

    def forward(input_ids=None, **kwargs):
        if ids is None:
            return SimpleNamespace(logits=logits)
        start = next(i for i in range(len(ids)) if torch.equal(ids[i : i + len(input_ids)], input_ids))
        return SimpleNamespace(logits=logits[start : start + len(input_ids)])

    return forward


def strop_pair_loss(
    objective, cfg: dict, logits: torch.Tensor, ids: torch.Tensor, reply: torch.Tensor, ref: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """strop's objective loss() on the batch its collate_pairs would build for these sequences."""
    attention = (ids != PAD) | (torch.arange(WIDTH) < PROMPT)
    labels = ids.masked_fill(reply == 0, -100)
    batch = {"input_ids": ids, "attention_mask": attention.long(), "labels": labels}
    if ref is not None:
        batch["ref_logps"] = ref
    objective.cfg = SimpleNamespace(**{"rl_beta": None, "dpo_beta": None, "precompute_ref_log_probs": True, **cfg})
    return objective.loss(logits_model(logits), batch, len(ids) // 2)


def trl_pair_batch(ids: torch.Tensor, reply: torch.Tensor) -> dict[str, torch.Tensor]:
    """The chosen_* / rejected_* batch TRL's CPO and ORPO trainers collate."""
    n = len(ids) // 2
    attention = ((ids != PAD) | (torch.arange(WIDTH) < PROMPT)).long()
    labels = ids.masked_fill(reply == 0, -100)
    return {
        "chosen_input_ids": ids[:n],
        "chosen_attention_mask": attention[:n],
        "chosen_labels": labels[:n],
        "rejected_input_ids": ids[n:],
        "rejected_attention_mask": attention[n:],
        "rejected_labels": labels[n:],
    }


def trl_cpo_like(trainer_cls, logits, ids, reply, **attrs) -> tuple[torch.Tensor, dict[str, float]]:
    """TRL's CPOTrainer / ORPOTrainer get_batch_loss_metrics through a stub self and a logits model."""
    stub = SimpleNamespace(
        is_encoder_decoder=False,
        padding_value=PAD,
        pad_token_id=PAD,
        aux_loss_enabled=False,
        accelerator=_Accelerator(),
        label_pad_token_id=-100,
        **attrs,
    )
    stub.concatenated_inputs = trainer_cls.concatenated_inputs
    stub.get_batch_logps = trainer_cls.get_batch_logps
    stub.concatenated_forward = lambda model, batch: trainer_cls.concatenated_forward(stub, model, batch)
    for name in ("cpo_loss", "odds_ratio_loss"):
        if hasattr(trainer_cls, name):
            setattr(stub, name, lambda *a, _f=getattr(trainer_cls, name): _f(stub, *a))
    return trainer_cls.get_batch_loss_metrics(stub, logits_model(logits), trl_pair_batch(ids, reply))


def cpo_attrs(loss_type: str, alpha: float, beta: float, gamma: float = 0.5, smoothing: float = 0.0) -> dict:
    return dict(
        loss_type=loss_type, cpo_alpha=alpha, beta=beta, simpo_gamma=gamma, label_smoothing=smoothing, alpha=0.0
    )


# ------------------------------------------------------------------ DPO family


def trl_dpo(logits, ids, reply, ref, loss_type: str, beta: float, smoothing: float = 0.0) -> torch.Tensor:
    """TRL's DPOTrainer._compute_loss: the stub model's fused head returns the float64 per-token log-probs of
    the labelled (reply) tokens and zeros elsewhere, as the real head does for labels of -100."""
    logps = torch.gather(logits[:, :-1].log_softmax(-1), 2, ids[:, 1:, None])[..., 0] * reply[:, 1:]
    zeros = torch.zeros_like(logps)
    outputs = SimpleNamespace(log_probs=logps, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())
    n = len(ids) // 2
    stub = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=_Accelerator(),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=smoothing,
        use_weighting=False,
        _metrics={"train": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "completion_mask": reply,
        "ref_chosen_logps": ref[:n],
        "ref_rejected_logps": ref[n:],
    }
    return dpo_trainer.DPOTrainer._compute_loss(stub, lambda **kwargs: outputs, inputs, return_outputs=False)


@pytest.mark.parametrize(("variant", "smoothing"), [("sigmoid", 0.0), ("ipo", 0.0), ("hinge", 0.0), ("robust", 0.15)])
def test_dpo_variants_match_trl(variant: str, smoothing: float) -> None:
    logits, ids, reply = pair_data(seed=1)
    ref = -torch.rand(len(ids), generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 20
    beta = 0.3
    theirs_logits, ours_logits = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    theirs = trl_dpo(theirs_logits, ids, reply, ref, variant, beta, smoothing)
    ours, _ = strop_pair_loss(
        DPOObjective(),
        {"rl_beta": beta, "dpo_loss_type": variant, "dpo_label_smoothing": smoothing},
        ours_logits,
        ids,
        reply,
        ref,
    )
    theirs.backward()
    ours.backward()
    assert abs(ours.item() - theirs.item()) < ATOL
    assert torch.allclose(ours_logits.grad, theirs_logits.grad, atol=ATOL, rtol=0)


def test_conservative_dpo_matches_trl_cpo_sigmoid_with_label_smoothing() -> None:
    """cDPO with a zero reference is CPO's preference term with label smoothing (pure functions, float64)."""
    chosen, rejected = -torch.rand(6, dtype=torch.float64) * 9, -torch.rand(6, dtype=torch.float64) * 9
    stub = SimpleNamespace(accelerator=_Accelerator(), **cpo_attrs("sigmoid", 0.0, 0.4, smoothing=0.2))
    theirs, _, _ = cpo_trainer.CPOTrainer.cpo_loss(stub, chosen, rejected)
    from strop.objectives.dpo import dpo_loss

    ours, _ = dpo_loss(chosen, rejected, torch.zeros(6), torch.zeros(6), beta=0.4, label_smoothing=0.2)
    assert torch.allclose(ours, theirs, atol=1e-6, rtol=0)


def fused_head(logits: torch.Tensor, ids: torch.Tensor, reply: torch.Tensor) -> SimpleNamespace:
    """What TRL's fused LM head returns: log-probs of the labelled (reply) tokens, zeros elsewhere."""
    logps = torch.gather(logits[:, :-1].log_softmax(-1), 2, ids[:, 1:, None])[..., 0] * reply[:, 1:]
    zeros = torch.zeros_like(logps)
    return SimpleNamespace(log_probs=logps, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())


def test_kto_with_its_kl_reference_point_matches_trl() -> None:
    """Rows 0..B-1 are the examples (desirable or not), rows B..2B-1 their mismatched (KL) completions."""
    logits, ids, reply = pair_data(seed=7)
    n = len(ids) // 2
    desirable = torch.tensor([True, False, True, True])
    ref = -torch.rand(len(ids), generator=torch.Generator().manual_seed(8), dtype=torch.float64) * 20
    theirs_logits, ours_logits = logits.clone().requires_grad_(), logits.clone().requires_grad_()

    def trl_model(input_ids, **kwargs):
        rows = slice(0, n) if torch.equal(input_ids, ids[:n]) else slice(n, 2 * n)
        return fused_head(theirs_logits[rows], ids[rows], reply[rows])

    stub = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=_Accelerator(),
        aux_loss_enabled=False,
        calculate_KL=True,
        precompute_ref_logps=True,
        loss_type="kto",
        beta=0.2,
        desirable_weight=1.3,
        undesirable_weight=0.8,
        _metrics={"train": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    stub._compute_kl_logps = lambda model, batch: kto_trainer.KTOTrainer._compute_kl_logps(stub, model, batch)
    inputs = {
        "input_ids": ids[:n],
        "attention_mask": torch.ones_like(ids[:n]),
        "completion_mask": reply[:n],
        "KL_input_ids": ids[n:],
        "KL_attention_mask": torch.ones_like(ids[n:]),
        "KL_completion_mask": reply[n:],
        "label": desirable,
        "ref_logps": ref[:n],
        "ref_KL_logps": ref[n:],
    }
    theirs = kto_trainer.KTOTrainer._compute_loss(stub, trl_model, inputs, return_outputs=False)

    objective = KTOObjective()
    objective.cfg = SimpleNamespace(
        rl_beta=0.2, dpo_beta=None, precompute_ref_log_probs=True, kto_desirable_weight=1.3, kto_undesirable_weight=0.8
    )
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": ids.masked_fill(reply == 0, -100),
        "desirable": desirable,
        "ref_logps": ref,
    }
    ours, metrics = objective.loss(logits_model(ours_logits, ids), batch, n)  # called once per half
    theirs.backward()
    ours.backward()
    assert abs(ours.item() - theirs.item()) < ATOL
    assert abs(metrics["kl"] - stub._metrics["train"]["kl"][0]) < ATOL
    assert torch.allclose(ours_logits.grad, theirs_logits.grad, atol=ATOL, rtol=0)


# ------------------------------------------------------------------ CPO, SimPO, CPO-SimPO


@pytest.mark.parametrize("nll_alpha", [0.0, 1.0, 0.4])
def test_simpo_and_cpo_simpo_match_trl(nll_alpha: float) -> None:
    """simpo_nll_alpha = TRL's cpo_alpha with loss_type="simpo". With an NLL term the chosen replies have
    equal lengths, where the per-reply and per-batch-token NLL means agree (see the next test)."""
    logits, ids, reply = pair_data(seed=2, chosen=[4] * 4 if nll_alpha else CHOSEN)
    theirs, metrics = trl_cpo_like(
        cpo_trainer.CPOTrainer, logits, ids, reply, **cpo_attrs("simpo", nll_alpha, 2.0, 0.7)
    )
    ours, _ = strop_pair_loss(
        SimPOObjective(), {"simpo_gamma": 0.7, "rl_beta": 2.0, "simpo_nll_alpha": nll_alpha}, logits, ids, reply
    )
    assert abs(ours.item() - theirs.item()) < ATOL
    assert nll_alpha == 0 or metrics["nll_loss"] > 0


def test_cpo_nll_is_a_per_reply_mean_where_trl_takes_a_batch_token_mean() -> None:
    """The one documented CPO difference, measured: with unequal chosen lengths strop's loss is TRL's with
    the NLL replaced by the mean over pairs of each reply's token mean."""
    logits, ids, reply = pair_data(seed=3)
    theirs, metrics = trl_cpo_like(cpo_trainer.CPOTrainer, logits, ids, reply, **cpo_attrs("sigmoid", 1.0, 0.1))
    ours, _ = strop_pair_loss(CPOObjective(), {"rl_beta": 0.1, "cpo_alpha": 1.0}, logits, ids, reply)
    n = len(CHOSEN)
    token_nll = -torch.gather(logits[:n, :-1].float().log_softmax(-1), 2, ids[:n, 1:, None])[..., 0] * reply[:n, 1:]
    per_reply = (token_nll.sum(1) / reply[:n].sum(1)).mean()
    assert abs(metrics["nll_loss"] - float(token_nll.sum() / reply[:n].sum())) < ATOL
    assert abs(ours.item() - (theirs.item() - metrics["nll_loss"] + float(per_reply))) < ATOL
    assert abs(float(per_reply) - metrics["nll_loss"]) > 1e-3  # the difference is real at these lengths


# ------------------------------------------------------------------ ORPO


def test_orpo_odds_ratio_term_matches_trl_and_nll_is_the_papers() -> None:
    """Same odds-ratio term; TRL's NLL covers prompt + reply tokens averaged over the batch's tokens, strop's
    (the paper's L_SFT) the chosen reply, a token mean per reply averaged over pairs."""
    logits, ids, reply = pair_data(seed=4)
    alpha = 0.25
    theirs, metrics = trl_cpo_like(orpo_trainer.ORPOTrainer, logits, ids, reply, beta=alpha)
    ours, ours_metrics = strop_pair_loss(ORPOObjective(), {"orpo_alpha": alpha}, logits, ids, reply)
    n = len(CHOSEN)
    token_logps = torch.gather(logits[:, :-1].log_softmax(-1), 2, ids[:, 1:, None])[..., 0]
    sequence = ((ids != PAD) | (torch.arange(WIDTH) < PROMPT))[:, 1:]
    trl_nll = -(token_logps[:n] * sequence[:n]).sum() / sequence[:n].sum()
    paper_nll = (-(token_logps[:n] * reply[:n, 1:]).sum(1) / reply[:n].sum(1)).mean()
    assert abs(metrics["nll_loss"] - float(trl_nll)) < ATOL
    assert abs(ours_metrics["nll_loss"] - float(paper_nll)) < ATOL
    assert abs((ours.item() - float(paper_nll)) - (theirs.item() - metrics["nll_loss"])) < ATOL


# ------------------------------------------------------------------ distillation divergences (GKD)


@pytest.mark.parametrize(("kind", "trl_beta"), [("forward_kl", 0.0), ("reverse_kl", 1.0), ("jsd", 0.3), ("jsd", 0.5)])
def test_distillation_divergences_match_trl_gkd(kind: str, trl_beta: float) -> None:
    """TRL's generalized_jsd_loss (a static method) per token, float64, with a temperature."""
    generator = torch.Generator().manual_seed(6)
    student = torch.randn(3, 5, 17, generator=generator, dtype=torch.float64)
    teacher = torch.randn(3, 5, 17, generator=generator, dtype=torch.float64)
    theirs = gkd_trainer.GKDTrainer.generalized_jsd_loss(
        student, teacher, beta=trl_beta, temperature=1.7, reduction="none"
    ).sum(-1)
    ours = token_divergence(student, teacher, 1.7, kind, beta=trl_beta if kind == "jsd" else 0.5)
    assert torch.allclose(ours, theirs, atol=1e-6, rtol=0)
