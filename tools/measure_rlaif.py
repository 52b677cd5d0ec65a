"""Does DPO on RLAIF pairs from a model's own samples move a held-out judge win rate and a verifiable metric?

The policy (SmolLM2-135M-Instruct by default) samples `--samples` replies at temperature 1 to the 120
review prompts of the preference example; the same model, as judge (verdicts from its logits, both
orders, a rubric asking for the correct sentiment), picks best and worst (`strop data rlaif`); DPO with
LoRA trains on those pairs. On the 24 held-out prompts, greedy answers of the trained model and of the
base are compared by the judge (win rate = mean P(trained better), 0.5 = no change), and checked against
the reference label (accuracy: the answer names the right sentiment and not the other one).

    python tools/measure_rlaif.py [--model smollm2-135m-instruct] [--judge MODEL] [--work /tmp/rlaif]
        [--prompts 120] [--samples 4] [--steps 60] [--lr 5e-5] [--seed 0]
    python tools/measure_rlaif.py --model TINY_FOLDER --smoke   # plumbing only (the test runs this)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from strop.commands.train import quickstart_config
from strop.config import load_config
from strop.data.readers import read_rows
from strop.datagen.feedback import rlaif
from strop.judge import LLMJudge, LocalBackend
from strop.train.loop import train

EXAMPLES = quickstart_config().parent.parent / "preference"
RUBRIC = (
    "The user asks for the sentiment of a product review. The better answer states the review's "
    "sentiment correctly (positive or negative), clearly and briefly."
)


def correct(reply: str, chosen: str) -> bool:
    """The reply names the reference sentiment and not the opposite one."""
    want = "positive" if "positive" in chosen.lower() else "negative"
    other = "negative" if want == "positive" else "positive"
    return want in reply.lower() and other not in reply.lower()


def held_out(limit: int | None) -> list[dict]:
    return [row for _, row in read_rows(str(EXAMPLES / "held_out.jsonl"))][:limit]


def train_dpo(model: str, pairs: Path, work: Path, steps: int, lr: float, seed: int, smoke: bool) -> Path:
    cfg = {
        "base_model": model,
        "rl": "dpo",
        "rl_beta": 0.1,
        "adapter": "lora",
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_target_modules": "all-linear",
        "datasets": [{"path": str(pairs), "type": "dpo"}],
        "sequence_len": 128 if smoke else 192,
        "micro_batch_size": 2 if smoke else 8,
        "max_steps": steps,
        "learning_rate": lr,
        "warmup_steps": 0 if smoke else 5,
        "lr_scheduler": "cosine",
        "bf16": False,
        "output_dir": str(work / "dpo"),
        "seed": seed,
        "logging_steps": 1,
    }
    (work / "dpo.yml").write_text(yaml.safe_dump(cfg))
    config, base = load_config(work / "dpo.yml")
    return train(config, base, overwrite=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--work", default="/tmp/strop-rlaif")
    parser.add_argument("--judge", help="judge model (default: the policy itself)")
    parser.add_argument("--prompts", type=int, help="use only the first N of the 120 training prompts")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="4 prompts, 1 step, 8 new tokens")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    limit, tokens = (4, 8) if args.smoke else (None, 24)
    prompts = work / "prompts.jsonl"
    rows = [row for _, row in read_rows(str(EXAMPLES / "train.jsonl"))][: limit or args.prompts]
    prompts.write_text("".join(json.dumps({"prompt": r["prompt"]}) + "\n" for r in rows))

    start = time.time()
    base = LocalBackend(args.model, max_new_tokens=tokens)
    judge = LLMJudge(LocalBackend(args.judge, max_new_tokens=8) if args.judge else base, RUBRIC, logprobs=True)
    sink = rlaif(
        base,
        judge,
        str(prompts),
        str(work / "pairs.jsonl"),
        n=args.samples,
        temperature=1.0,
        seed=args.seed,
        batch_size=8,
        resume=False,
    )
    print(f"RLAIF pairs: {sink.written} from {len(rows)} prompts ({dict(sink.counts)}), {time.time() - start:.0f} s")
    if sink.written == 0:
        raise SystemExit("no pairs: the judge tied every comparison")
    out = train_dpo(
        args.model, work / "pairs.jsonl", work, 1 if args.smoke else args.steps, args.lr, args.seed, args.smoke
    )

    tests = held_out(limit)
    asks = [r["prompt"] for r in tests]
    trained = LocalBackend(str(out), max_new_tokens=tokens)
    before, after = base.complete(asks), trained.complete(asks)
    win = judge.compare_many([(p, a, b) for p, a, b in zip(asks, after, before)])
    acc_before = sum(correct(r, t["chosen"]) for r, t in zip(before, tests)) / len(tests)
    acc_after = sum(correct(r, t["chosen"]) for r, t in zip(after, tests)) / len(tests)
    print(
        f"held-out ({len(tests)} prompts): judge win rate of DPO vs base {sum(win) / len(win):.3f} "
        f"(0.5 = no change); sentiment accuracy {acc_before:.3f} -> {acc_after:.3f}; "
        f"mean reply length {sum(map(len, before)) / len(before):.0f} -> {sum(map(len, after)) / len(after):.0f} "
        f"chars; total {time.time() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
