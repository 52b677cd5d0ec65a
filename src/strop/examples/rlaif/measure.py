"""RLAIF → DPO on SmolLM2-135M-Instruct's own samples, measured by a verifiable metric. Run from the
repository root (25 minutes here, one thread on a busy 2-core CPU):

    python -m strop.examples.rlaif.measure [--out outputs/rlaif-measure] [--train 128] [--held-out 128]

1. Prompts: seeded additions "What is a + b? Reply with only the number." (1 ≤ a, b < 30), split into
   training prompts and held-out prompts that share no (a, b).
2. Before: the model's greedy answers to the held-out prompts, scored exactly.
3. RLAIF (`strop.datagen.feedback.rlaif`, what `strop data rlaif` runs): the model samples `--samples`
   replies per training prompt, and a verifiable judge compares them: a reply scores 1 when its whole
   text is the sum (`exact`), ½ when the sum is among its numbers (`correct`), else 0; P(first beats second)
   = ½ + ½ (score₁ − score₂). Best vs worst by Borda count becomes a DPO pair; ties make none.
4. `strop train` with rl: dpo, LoRA, on those pairs.
5. After: the same greedy held-out answers from the trained adapter.

The judge sees only the prompt and the two replies; the reference sum comes from the prompt itself, so
the judge is exact, not a model's opinion. The held-out prompts are never sampled for training.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml

TEMPLATE = "What is {a} + {b}? Reply with only the number."
_PROMPT = re.compile(r"What is (\d+) \+ (\d+)\?")
_NUMBER = re.compile(r"\d+")


def make_prompts(train: int, held_out: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Disjoint training and held-out additions, each row {prompt, answer}."""
    pairs = [(a, b) for a in range(1, 30) for b in range(1, 30)]
    random.Random(seed).shuffle(pairs)
    rows = [{"prompt": TEMPLATE.format(a=a, b=b), "answer": str(a + b)} for a, b in pairs[: train + held_out]]
    return rows[:train], rows[train:]


def sum_of(prompt: str) -> str:
    match = _PROMPT.search(prompt)
    if match is None:
        raise ValueError(f"not an addition prompt: {prompt!r}")
    return str(int(match[1]) + int(match[2]))


def score(reply: str, answer: str) -> float:
    """1: the reply is the number alone; 0.5: the sum is one of its numbers; 0: neither."""
    if reply.strip().rstrip(".").strip() == answer:
        return 1.0
    return 0.5 if answer in _NUMBER.findall(reply) else 0.0


class _Named:
    name = "verifiable: exact sum"


class SumJudge:
    """A pairwise judge with the interface `rlaif` asks of one (`compare_many`, `describe`, `backend`)."""

    backend = _Named()

    def __init__(self) -> None:
        self.compared = 0

    def describe(self) -> dict:
        return {"kind": "verifiable", "rule": "1 exact sum, 0.5 sum among its numbers, 0 else", "pairs": self.compared}

    def compare_many(self, triples: Sequence[tuple[str, str, str]]) -> list[float]:
        self.compared += len(triples)
        out = []
        for prompt, first, second in triples:
            answer = sum_of(prompt)
            out.append(0.5 + 0.5 * (score(first, answer) - score(second, answer)))
        return out


def evaluate(backend, rows: list[dict]) -> dict:
    replies = backend.complete([r["prompt"] for r in rows], 0.0)
    scores = [score(reply, r["answer"]) for reply, r in zip(replies, rows)]
    return {
        "exact": sum(s == 1.0 for s in scores) / len(rows),
        "correct": sum(s > 0 for s in scores) / len(rows),
        "examples": [{"prompt": r["prompt"], "reply": reply} for r, reply in zip(rows[:4], replies[:4])],
    }


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def main() -> None:
    from strop.config import load_config
    from strop.datagen.feedback import rlaif
    from strop.judge import LocalBackend
    from strop.train.loop import train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/rlaif-measure")
    parser.add_argument("--train", type=int, default=128, help="training prompts (RLAIF samples these)")
    parser.add_argument("--held-out", type=int, default=128, help="held-out prompts (scored before and after)")
    parser.add_argument("--samples", type=int, default=4, help="replies sampled per training prompt")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_rows, held_rows = make_prompts(args.train, args.held_out, args.seed)
    write_jsonl(out / "prompts.jsonl", [{"prompt": r["prompt"]} for r in train_rows])
    timings: dict[str, float] = {}

    started = time.perf_counter()
    policy = LocalBackend("smollm2-135m-instruct", max_new_tokens=12, batch_size=32)
    before = evaluate(policy, held_rows)
    timings["eval_before_s"] = time.perf_counter() - started
    print(f"before: exact {before['exact']:.3f}, sum among its numbers {before['correct']:.3f}", flush=True)

    started = time.perf_counter()
    sink = rlaif(
        policy,
        SumJudge(),
        str(out / "prompts.jsonl"),
        str(out / "pairs.jsonl"),
        n=args.samples,
        temperature=1.0,
        seed=args.seed,
        batch_size=32,
        resume=False,
    )
    timings["rlaif_s"] = time.perf_counter() - started
    print(f"rlaif: {sink.written} pairs {dict(sink.counts)}", flush=True)

    config = {
        "base_model": "smollm2-135m-instruct",
        "rl": "dpo",
        "rl_beta": 0.1,
        "adapter": "lora",
        "lora_r": 16,
        "lora_alpha": 32,
        "datasets": [{"path": "pairs.jsonl", "type": "dpo"}],
        "sequence_len": 96,
        "micro_batch_size": 8,
        "num_epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "warmup_steps": 2,
        "seed": args.seed,
        "logging_steps": 5,
        "output_dir": str((out / "dpo").resolve()),
    }
    (out / "dpo.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    cfg, base = load_config(out / "dpo.yml")
    started = time.perf_counter()
    trained = train(cfg, base, overwrite=True)
    timings["dpo_s"] = time.perf_counter() - started

    started = time.perf_counter()
    after = evaluate(LocalBackend(str(trained), max_new_tokens=12, batch_size=32), held_rows)
    timings["eval_after_s"] = time.perf_counter() - started
    result = {
        "held_out": len(held_rows),
        "pairs": sink.written,
        "before": before,
        "after": after,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
