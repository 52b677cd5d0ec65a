"""`preference`: does the model rank the chosen reply above the rejected one on held-out pairs?

Two scorers, either or both:

- the policy's implicit reward (DPO, Rafailov et al., 2023, eq. 5): r(x, y) = β·(log π(y|x) − log π_ref(y|x)),
  with π_ref the base model (the adapter switched off; default) or any model folder (`reference`).
  Reported as preference accuracy (share of pairs with r(chosen) > r(rejected); a tie is not a win,
  as in TRL's `rewards/accuracies`) and the mean reward margin r(chosen) − r(rejected);
- a trained reward model (`reward_model`, an `rl: reward` output folder): its accuracy and mean margin.

Rows use any pair format `rl: dpo` reads (prompt/chosen/rejected, chatml.intel, ...), rendered with the
chat template exactly as in training.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field

from strop.data.preference import PAIR_FORMATS, collate_pairs, encode_prompt, encode_reply, pair_row
from strop.errors import StropError
from strop.evaluation.base import EvalResult, EvaluatorType, Options, Subject, data_rows, last_user_text, local_path


class PreferenceOptions(Options):
    format: str = Field("dpo", description=f"Pair format: one of {', '.join(PAIR_FORMATS)}.")
    beta: float = Field(0.1, gt=0, description="β of the implicit reward β·(log π − log π_ref).")
    implicit: bool = Field(True, description="Score pairs with the policy's implicit reward.")
    reference: str = Field("base", description="Reference model: 'base' (adapter switched off) or a model folder.")
    reward_model: str | None = Field(None, description="Also score pairs with this reward model folder.")
    batch_size: int = Field(4, gt=0, description="Pairs per forward pass.")


def pair_metrics(chosen: list[float], rejected: list[float], prefix: str = "") -> dict[str, float]:
    """Accuracy (strictly greater) and mean margin of paired scores."""
    n = len(chosen)
    return {
        f"{prefix}accuracy": sum(c > r for c, r in zip(chosen, rejected)) / n,
        f"{prefix}margin": sum(c - r for c, r in zip(chosen, rejected)) / n,
    }


@torch.no_grad()
def reply_logps(model, tokenizer, pairs: list[dict], batch_size: int) -> tuple[list[float], list[float]]:
    """Summed log π(reply | prompt) of each pair's chosen and rejected reply."""
    from strop.models.loading import eval_mode
    from strop.objectives.preference_common import sequence_logps

    device = next(model.parameters()).device
    chosen, rejected = [], []
    with eval_mode(model):
        for start in range(0, len(pairs), batch_size):
            rows = []
            for pair in pairs[start : start + batch_size]:
                text, prompt_ids = encode_prompt(tokenizer, pair["prompt"])
                chosen_ids, rejected_ids = (
                    encode_reply(tokenizer, pair["prompt"], text, pair[s], pair["where"])
                    for s in ("chosen", "rejected")
                )
                rows.append(pair_row(prompt_ids, chosen_ids, rejected_ids))
            batch = {k: v.to(device) for k, v in collate_pairs(rows, tokenizer.pad_token_id).items()}
            logps = sequence_logps(model, batch)[0].double().cpu().tolist()
            chosen += logps[: len(rows)]
            rejected += logps[len(rows) :]
    return chosen, rejected


def _reference_logps(options: PreferenceOptions, subject: Subject, pairs: list[dict], reference):
    if reference is not None:
        return reply_logps(reference, subject.tokenizer, pairs, options.batch_size)
    if not hasattr(subject.model, "disable_adapter"):
        raise StropError(
            "preference evaluator: reference 'base' needs an adapter model (the adapter is switched "
            "off to get the base); for a full or merged model set `reference` to the base model's folder"
        )
    with subject.model.disable_adapter():
        return reply_logps(subject.model, subject.tokenizer, pairs, options.batch_size)


def build(options: PreferenceOptions, base_dir: Path | None):
    if options.format not in PAIR_FORMATS:
        raise StropError(f"preference evaluator: unknown format '{options.format}' (known: {', '.join(PAIR_FORMATS)})")
    if not options.implicit and not options.reward_model:
        raise StropError("preference evaluator: nothing to score with: set implicit: true or a reward_model")
    pairs = [PAIR_FORMATS[options.format](row, where) | {"where": where} for where, row in data_rows(options, base_dir)]
    reference = scorer = None
    if options.implicit and options.reference != "base":
        from strop.models.saved import load_for_chat

        reference = load_for_chat(local_path(options.reference, base_dir))[0]
    if options.reward_model:
        from strop.rl.reward_scorer import RewardScorer

        scorer = RewardScorer(local_path(options.reward_model, base_dir))

    def evaluate(subject: Subject) -> EvalResult:
        metrics: dict[str, float] = {}
        if options.implicit:
            chosen, rejected = reply_logps(subject.model, subject.tokenizer, pairs, options.batch_size)
            ref_c, ref_r = _reference_logps(options, subject, pairs, reference)
            reward_c = [options.beta * (a - b) for a, b in zip(chosen, ref_c)]
            reward_r = [options.beta * (a - b) for a, b in zip(rejected, ref_r)]
            metrics |= pair_metrics(reward_c, reward_r)
        if scorer is not None:
            prompts = [p["prompt"] for p in pairs]
            rm_c = scorer.score(prompts, [p["chosen"] for p in pairs], options.batch_size)
            rm_r = scorer.score(prompts, [p["rejected"] for p in pairs], options.batch_size)
            metrics |= pair_metrics(rm_c, rm_r, "reward_model_")
        samples = [
            {"prompt": last_user_text(p["prompt"]), "chosen": p["chosen"], "rejected": p["rejected"]}
            for p in pairs[: options.samples]
        ]
        return EvalResult(metrics, samples)

    return evaluate


EVALUATOR = EvaluatorType(PreferenceOptions, build)
