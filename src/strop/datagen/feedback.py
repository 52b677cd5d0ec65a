"""AI feedback: preference pairs labelled by a judge instead of people.

- RLAIF (Bai et al. 2022; Lee et al. 2023): sample n ≥ 2 replies per prompt from the policy, let the judge
  compare every pair, and write (best, worst) by total preference (a Borda count over the C(n,2)
  comparisons) as a DPO/ORPO pair, or both as KTO rows (desirable / undesirable).
- Comparative knowledge distillation (all pairs): every one of the C(n,2) comparisons among n teacher
  samples becomes a pair, the winner chosen, with the judge's probability kept as `judge_p`.
- Constitutional AI (Bai et al. 2022, the SL stage): the model answers, critiques its answer against a
  principle drawn from the constitution, and revises it; (revised, original) is the pair.

A comparison the judge leaves at 0.5 (no preference, or unparseable both ways) makes no pair: a tie is
no signal, and the card counts it.
"""

from __future__ import annotations

import random
from itertools import combinations
from pathlib import Path
from typing import Any

from strop.datagen.runner import PromptItem, run_prompts, seed_batch
from strop.datagen.sink import Sink
from strop.errors import StropError


def _samples(policy, batch: list[PromptItem], n: int, temperature: float) -> list[list[str]]:
    flat = policy.complete([prompt for _, _, prompt in batch for _ in range(n)], temperature)
    return [flat[i * n : (i + 1) * n] for i in range(len(batch))]


def _distinct(replies: list[str]) -> list[str]:
    return list(dict.fromkeys(r for r in replies if r.strip()))


def _pair_rows(prompt: str, chosen: str, rejected: str, p: float, fmt: str) -> list[dict[str, Any]]:
    if fmt == "kto":
        return [
            {"prompt": prompt, "completion": chosen, "label": True},
            {"prompt": prompt, "completion": rejected, "label": False},
        ]
    return [{"prompt": prompt, "chosen": chosen, "rejected": rejected, "judge_p": round(p, 4)}]


def _judged_pairs(judge, batch: list[PromptItem], candidates: list[list[str]]) -> list[list[tuple[int, int, float]]]:
    """Per prompt, (i, j, P(i beats j)) for every pair of its candidates, judged in one batch."""
    triples, owners = [], []
    for k, ((_, _, prompt), replies) in enumerate(zip(batch, candidates)):
        for i, j in combinations(range(len(replies)), 2):
            triples.append((prompt, replies[i], replies[j]))
            owners.append((k, i, j))
    results: list[list[tuple[int, int, float]]] = [[] for _ in batch]
    for (k, i, j), p in zip(owners, judge.compare_many(triples) if triples else []):
        results[k].append((i, j, p))
    return results


def rlaif(
    policy,
    judge,
    prompts: str,
    out: str,
    n: int = 2,
    temperature: float = 1.0,
    fmt: str = "dpo",
    all_pairs: bool = False,
    seed: int = 0,
    batch_size: int = 4,
    resume: bool = True,
) -> Sink:
    """Write judge-labelled pairs: best vs worst per prompt, or every pair with `all_pairs`."""
    if n < 2:
        raise StropError(f"rlaif: need at least 2 samples per prompt, got {n}")
    if fmt not in ("dpo", "kto"):
        raise StropError(f"rlaif: format must be dpo or kto, got {fmt!r}")

    def handle(start: int, batch: list[PromptItem], sink: Sink) -> None:
        seed_batch(seed, start)
        candidates = [_distinct(r) for r in _samples(policy, batch, n, temperature)]
        for (_, _, prompt), replies, judged in zip(batch, candidates, _judged_pairs(judge, batch, candidates)):
            if len(replies) < 2:
                sink.counts["fewer than 2 distinct samples"] += 1
                continue
            if all_pairs:
                for i, j, p in judged:
                    if p == 0.5:
                        sink.counts["tie"] += 1
                        continue
                    win, lose = (i, j) if p > 0.5 else (j, i)
                    for row in _pair_rows(prompt, replies[win], replies[lose], max(p, 1 - p), fmt):
                        sink.write(row)
                continue
            wins = [0.0] * len(replies)
            for i, j, p in judged:
                wins[i] += p
                wins[j] += 1 - p
            best, worst = max(range(len(wins)), key=wins.__getitem__), min(range(len(wins)), key=wins.__getitem__)
            if wins[best] == wins[worst]:
                sink.counts["tie"] += 1
                continue
            p_best = next(p if i == best else 1 - p for i, j, p in judged if {i, j} == {best, worst})
            for row in _pair_rows(prompt, replies[best], replies[worst], p_best, fmt):
                sink.write(row)
            sink.counts["pairs"] += 1

    key = {
        "kind": "rlaif",
        "prompts": prompts,
        "n": n,
        "t": temperature,
        "fmt": fmt,
        "all": all_pairs,
        "seed": seed,
        "policy": policy.name,
        "judge": judge.backend.name,
    }
    card = {
        "command": "data compare" if all_pairs else "data rlaif",
        "dataset_type": fmt,
        "policy": policy.name,
        "samples_per_prompt": n,
        "temperature": temperature,
        "seed": seed,
    }
    return run_prompts(
        prompts, out, key, lambda: {**card, "judge": judge.describe()}, batch_size, "judging samples", handle, resume
    )


def read_constitution(path: str) -> list[str]:
    """Principles, one per paragraph (blank-line separated) or, without blank lines, one per line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise StropError(f"{path}: cannot read the constitution: {err.strerror or err}") from err
    parts = [p.strip() for p in text.split("\n\n")] if "\n\n" in text.strip() else text.splitlines()
    principles = [" ".join(p.split()) for p in parts if p.strip() and not p.strip().startswith("#")]
    if not principles:
        raise StropError(f"{path}: the constitution has no principles")
    return principles


def critique_prompt(prompt: str, reply: str, principle: str) -> str:
    return (
        f"[Request]\n{prompt}\n\n[Response]\n{reply}\n\nCritique the response against this principle: "
        f"{principle}\nName every way in which it falls short."
    )


def revision_prompt(prompt: str, reply: str, critique: str, principle: str) -> str:
    return (
        f"[Request]\n{prompt}\n\n[Response]\n{reply}\n\n[Critique]\n{critique}\n\nRewrite the response so that "
        f"it follows the principle: {principle}\nReply with the rewritten response only."
    )


def constitutional(
    model,
    constitution: str,
    prompts: str,
    out: str,
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 4,
    resume: bool = True,
) -> Sink:
    """Write (revised, original) pairs: answer, critique against a random principle, revise."""
    principles = read_constitution(constitution)

    def handle(start: int, batch: list[PromptItem], sink: Sink) -> None:
        seed_batch(seed, start)
        rng = random.Random(seed * 1_000_003 + start)
        asked = [prompt for _, _, prompt in batch]
        drawn = [rng.choice(principles) for _ in batch]
        originals = model.complete(asked, temperature)
        critiques = model.complete([critique_prompt(p, r, c) for p, r, c in zip(asked, originals, drawn)], temperature)
        revisions = model.complete(
            [revision_prompt(p, r, k, c) for p, r, k, c in zip(asked, originals, critiques, drawn)], temperature
        )
        for prompt, original, critique, revised, principle in zip(asked, originals, critiques, revisions, drawn):
            if not original.strip() or not revised.strip():
                sink.counts["empty answer or revision"] += 1
            elif " ".join(revised.split()) == " ".join(original.split()):
                sink.counts["revision unchanged"] += 1
            else:
                sink.write(
                    {
                        "prompt": prompt,
                        "chosen": revised,
                        "rejected": original,
                        "principle": principle,
                        "critique": critique,
                    }
                )
                sink.counts["pairs"] += 1

    key = {
        "kind": "cai",
        "prompts": prompts,
        "constitution": constitution,
        "t": temperature,
        "seed": seed,
        "model": model.name,
    }
    card = {
        "command": "data constitutional",
        "dataset_type": "dpo",
        "model": model.name,
        "constitution": constitution,
        "principles": len(principles),
        "seed": seed,
    }
    return run_prompts(prompts, out, key, card, batch_size, "critique and revise", handle, resume)
