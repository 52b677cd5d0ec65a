"""Held-out preference accuracy of SmolLM2-135M before and after DPO, ORPO, SimPO and KTO (LoRA), with a
generated sample before and after. Run from the repository root:

    python -m strop.examples.preference.measure [--objectives dpo orpo simpo kto] [--steps 20]

Accuracies on held_out.jsonl (24 pairs the training never sees):
- logp margin: share of pairs with log π(y_c|x) > log π(y_r|x) (summed over reply tokens): the model itself
  prefers the chosen reply; comparable before and after for every objective;
- implicit reward (DPO, KTO): share with β·[(log π − log π_ref)(y_c) − (log π − log π_ref)(y_r)] > 0, the
  accuracy those objectives' rewards report (0 before training, where every margin is 0).
"""

from __future__ import annotations

import argparse
import json
import time
from importlib import resources
from pathlib import Path

import torch

from strop.config import Config

HERE = Path(str(resources.files("strop") / "examples" / "preference"))


@torch.no_grad()
def pair_logps(model, tokenizer, rows: list[dict], batch_size: int = 8) -> torch.Tensor:
    """(n, 2) summed reply log-probs [chosen, rejected] of pair rows (as built by build_pair_data)."""
    from strop.data.preference import collate_pairs
    from strop.models import eval_mode
    from strop.objectives.preference_common import sequence_logps

    device = next(model.parameters()).device
    out = []
    with eval_mode(model):
        for start in range(0, len(rows), batch_size):
            chunk = [{k: v for k, v in r.items() if k != "ref"} for r in rows[start : start + batch_size]]
            batch = {k: v.to(device) for k, v in collate_pairs(chunk, tokenizer.pad_token_id).items()}
            logps = sequence_logps(model, batch)[0].double().cpu()
            out.append(torch.stack([logps[: len(chunk)], logps[len(chunk) :]], dim=1))
    return torch.cat(out)


def accuracies(before: torch.Tensor, after: torch.Tensor) -> dict[str, float]:
    margin_before = before[:, 0] - before[:, 1]
    margin_after = after[:, 0] - after[:, 1]
    return {
        "logp_margin_acc_before": float((margin_before > 0).double().mean()),
        "logp_margin_acc_after": float((margin_after > 0).double().mean()),
        "implicit_reward_acc": float((margin_after - margin_before > 0).double().mean()),
        "mean_margin_before": float(margin_before.mean()),
        "mean_margin_after": float(margin_after.mean()),
    }


def held_out_rows(cfg: Config, tokenizer) -> list[dict]:
    from strop.data.preference import build_pair_data

    held = cfg.model_copy(
        update={
            "datasets": [cfg.datasets[0].model_copy(update={"path": str(HERE / "held_out.jsonl"), "type": "dpo"})],
            "val_set_size": 0.0,
        }
    )
    rows, _, _ = build_pair_data(held, tokenizer, None, "measure")
    return rows


def measure(
    rl: str, steps: int, out_root: Path, prompt: str, extra: list[str] | None = None, train_rows: int | None = None
) -> dict:
    """Train `rl` with the example config and report held-out accuracies and a sample before/after."""
    from strop.config import load_config
    from strop.models.generate import answer_prompts
    from strop.train.loop import prepare, train

    overrides = [f"rl={rl}", f"max_steps={steps}", f"output_dir={out_root / rl}", "sample_prompts=null", *(extra or [])]
    if train_rows:  # a prefix of train.jsonl: fewer rows to precompute reference log-probs for
        subset = out_root / "train_subset.jsonl"
        subset.parent.mkdir(parents=True, exist_ok=True)
        subset.write_text("".join((HERE / "train.jsonl").read_text().splitlines(keepends=True)[:train_rows]))
        overrides.append(f"datasets=[{{path: {subset.resolve()}, type: dpo}}]")
    cfg, base = load_config(HERE / "dpo.yml", overrides)
    run = prepare(cfg, base)
    rows = held_out_rows(cfg, run.tokenizer)
    before = pair_logps(run.model, run.tokenizer, rows)
    sample_before = answer_prompts(run.model, run.tokenizer, [prompt], 16)[0]
    del run
    started = time.perf_counter()
    out = train(cfg, base, overwrite=True)
    seconds = time.perf_counter() - started
    from peft import PeftModel

    from strop.models import load_model, load_tokenizer, resolve_model_path

    tuned = PeftModel.from_pretrained(load_model(resolve_model_path(cfg.base_model)), str(out)).eval()
    tokenizer = load_tokenizer(str(out))
    after = pair_logps(tuned, tokenizer, rows)
    result = {
        "rl": rl,
        "steps": steps,
        "train_seconds": round(seconds, 1),
        **accuracies(before, after),
        "sample_before": sample_before,
        "sample_after": answer_prompts(tuned, tokenizer, [prompt], 16)[0],
    }
    if rl not in ("dpo", "ipo", "kto"):
        del result["implicit_reward_acc"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", nargs="+", default=["dpo", "orpo", "simpo", "kto"])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--out", default="outputs/preference-measure")
    parser.add_argument("--train-rows", type=int, help="train on the first N pairs only")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    args = parser.parse_args()
    prompt = "Is this review positive or negative?\n\nI bought a kettle and it broke after two days."
    results = []
    for rl in args.objectives:
        results.append(measure(rl, args.steps, Path(args.out), prompt, args.set, args.train_rows))
        print(json.dumps(results[-1]), flush=True)


if __name__ == "__main__":
    main()
