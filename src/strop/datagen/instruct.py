"""Instruction generation: Self-Instruct and Evol-Instruct, writing alpaca rows.

- Self-Instruct (Wang et al. 2023): show the model a few instructions from the pool (seed + generated),
  ask for a new one, keep it only if it passes the paper's heuristics: 3 to 150 words, no keyword a text
  model cannot serve (image, graph, file, draw ...), not starting with punctuation, and ROUGE-L below 0.7
  against every instruction already in the pool; then the model writes its output.
- Evol-Instruct (Xu et al. 2023, WizardLM): rewrite an instruction with one operator (in depth: add
  constraints, deepen, more reasoning steps; in breadth: a new instruction of the same domain), and drop
  failed evolutions as the paper does: no new information (ROUGE-L with the original ≥ 0.9), the
  rewrite prompt's own words leaked into it, or a reply that apologises and is short.
"""

from __future__ import annotations

import random
from pathlib import Path

from strop.datagen.minhash import words
from strop.datagen.rows import read_prompts
from strop.datagen.runner import PromptItem, run_prompts, seed_batch
from strop.datagen.sink import Sink, input_stamp
from strop.errors import StropError

BLACKLIST = (
    "image",
    "images",
    "graph",
    "graphs",
    "picture",
    "pictures",
    "file",
    "files",
    "map",
    "maps",
    "draw",
    "plot",
    "go to",
    "video",
    "audio",
    "music",
    "flowchart",
    "diagram",
)
EVOLUTIONS = {
    "constraints": "Add one more constraint or requirement to the instruction below.",
    "deepen": "Make the instruction below ask about the topic in more depth and breadth.",
    "reasoning": "Rewrite the instruction below so that it explicitly requires several steps of reasoning.",
    "concretize": "Replace general concepts in the instruction below with more specific ones.",
    "breadth": "Write a brand-new instruction in the same domain as the one below, but rarer and different.",
}
_LEAKS = ("#rewritten prompt#", "rewritten prompt", "given prompt", "#given prompt#", "new prompt", "#created prompt#")


def lcs(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, by dynamic programming over one row."""
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b, start=1):
            prev, row[j] = row[j], prev + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 (Lin 2004) on lower-cased words: 2PR/(P+R), P = LCS/|candidate|, R = LCS/|reference|."""
    a, b = words(candidate), words(reference)
    common = lcs(a, b) if a and b else 0
    return 0.0 if common == 0 else 2 * common / (len(a) + len(b))


def instruction_problem(
    text: str, pool: list[str], max_similarity: float = 0.7, min_words: int = 3, max_words: int = 150
) -> str | None:
    """Why Self-Instruct would drop a generated instruction, or None to keep it."""
    count = len(words(text))
    if count < min_words or count > max_words:
        return "length"
    lowered = f" {' '.join(words(text))} "
    if any(f" {word} " in lowered for word in BLACKLIST):
        return "blacklisted word"
    if not text[:1].isalnum():
        return "starts with punctuation"
    if any(rouge_l(text, other) >= max_similarity for other in pool):
        return "too similar to an existing instruction"
    return None


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip().lstrip("0123456789.)-* ").strip()
        if line:
            return line.removeprefix("Instruction:").strip()
    return ""


def self_instruct(
    model,
    seeds: str,
    out: str,
    count: int,
    shots: int = 3,
    max_similarity: float = 0.7,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 4,
    max_rounds: int | None = None,
    resume: bool = True,
) -> Sink:
    """Grow `count` new alpaca rows from the seed instructions (fewer if `max_rounds` runs out)."""
    pool = read_prompts(seeds)
    sink = Sink(
        out,
        key={
            "kind": "self-instruct",
            "seeds": input_stamp(seeds),
            "count": count,
            "seed": seed,
            "model": model.name,
            "t": temperature,
            "sim": max_similarity,
        },
        resume=resume,
    )
    if sink.resumed:
        pool += [row["instruction"] for row in _rows_of(sink.partial)]
    rng = random.Random(seed + sink.consumed)
    rounds = sink.consumed
    try:
        while sink.written < count and (max_rounds is None or rounds < max_rounds):
            seed_batch(seed, rounds)
            demos = [rng.sample(pool, min(shots, len(pool))) for _ in range(batch_size)]
            asks = [
                "Come up with a new task.\n"
                + "".join(f"{i + 1}. {d}\n" for i, d in enumerate(demo))
                + f"{len(demo) + 1}."
                for demo in demos
            ]
            fresh = []
            for text in model.complete(asks, temperature):
                instruction = _first_line(text)
                problem = instruction_problem(instruction, pool, max_similarity)
                if problem:
                    sink.counts[f"dropped: {problem}"] += 1
                else:
                    pool.append(instruction)
                    fresh.append(instruction)
            for instruction, output in zip(fresh, model.complete(fresh, 0.0) if fresh else []):
                if output.strip() and sink.written < count:
                    sink.write({"instruction": instruction, "input": "", "output": output})
                else:
                    sink.counts["dropped: empty output" if not output.strip() else "over count"] += 1
            rounds += 1
            sink.commit(rounds)
        sink.finish(
            {
                "command": "data self-instruct",
                "dataset_type": "alpaca",
                "seeds": seeds,
                "model": model.name,
                "seed": seed,
                "temperature": temperature,
                "max_similarity": max_similarity,
                "rounds": rounds,
            }
        )
    finally:
        sink.close()
    return sink


def _rows_of(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def evolution_problem(original: str, evolved: str, reply: str) -> str | None:
    """Why Evol-Instruct's elimination step would drop an evolution, or None to keep it."""
    if not evolved.strip():
        return "empty evolution"
    if rouge_l(evolved, original) >= 0.9:
        return "no new information"
    if any(leak in evolved.lower() for leak in _LEAKS):
        return "copied the rewrite prompt"
    if not reply.strip():
        return "empty answer"
    if "sorry" in reply.lower() and len(words(reply)) < 80:
        return "answer refuses"
    return None


def evol_instruct(
    model,
    prompts: str,
    out: str,
    operators: list[str] | None = None,
    rounds: int = 1,
    temperature: float = 0.7,
    seed: int = 0,
    batch_size: int = 4,
    resume: bool = True,
) -> Sink:
    """Evolve each instruction `rounds` times (a random operator each time), answer the survivors."""
    operators = operators or list(EVOLUTIONS)
    unknown = [op for op in operators if op not in EVOLUTIONS]
    if unknown:
        raise StropError(f"evol-instruct: unknown operator(s) {', '.join(unknown)} (known: {', '.join(EVOLUTIONS)})")

    def handle(start: int, batch: list[PromptItem], sink: Sink) -> None:
        seed_batch(seed, start)
        rng = random.Random(seed * 1_000_003 + start)
        current = [prompt for _, _, prompt in batch]
        for _ in range(rounds):
            ops = [rng.choice(operators) for _ in current]
            asks = [
                f"{EVOLUTIONS[op]} Reply with the new instruction only.\n\nInstruction: {text}"
                for op, text in zip(ops, current)
            ]
            evolved = [_first_line(e) for e in model.complete(asks, temperature)]
            replies = model.complete([e or " " for e in evolved], 0.0)
            survivors = []
            for original, new, reply, op in zip(current, evolved, replies, ops):
                problem = evolution_problem(original, new, reply)
                if problem:
                    sink.counts[f"dropped: {problem}"] += 1
                    continue
                sink.counts[f"evolved: {op}"] += 1
                sink.write({"instruction": new, "input": "", "output": reply, "evolved_from": original, "operator": op})
                survivors.append(new)
            current = survivors
            if not current:
                break

    key = {"kind": "evol", "prompts": prompts, "ops": operators, "rounds": rounds, "seed": seed, "model": model.name}
    card = {
        "command": "data evol-instruct",
        "dataset_type": "alpaca",
        "model": model.name,
        "operators": operators,
        "rounds": rounds,
        "seed": seed,
        "temperature": temperature,
    }
    return run_prompts(prompts, out, key, card, batch_size, "evolving", handle, resume)
