"""Regenerate the RL example's arithmetic word problems (deterministic; the output is committed).

Each row is a prompt and its numeric answer, the shape a verifiable `math` reward reads:
{"prompt": "...", "answer": "42"}. Addition, subtraction and multiplication of small numbers, in a few
phrasings: SmolLM2-135M-Instruct answers about a third of them right greedily, which leaves GRPO room
both ways. Held-out problems use names and items that never occur in training.
"""

import json
import random
from pathlib import Path

TRAIN_NAMES = ["Tom", "Ana", "Li", "Sara", "Omar", "Mia", "Ivan", "Zoe", "Ravi", "Emma"]
TRAIN_ITEMS = ["apples", "books", "coins", "stickers", "pencils", "marbles", "cards", "shells"]
EVAL_NAMES = ["Noah", "Yuki", "Leila", "Pablo"]
EVAL_ITEMS = ["buttons", "cookies", "stamps", "beads"]
SUFFIX = " End with: The answer is <number>."


def problem(rng: random.Random, kind: int, names: list[str], items: list[str]) -> dict:
    name, item = rng.choice(names), rng.choice(items)
    if kind == 0:
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        text, answer = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?", a + b
    elif kind == 1:
        a, b = sorted(rng.sample(range(2, 50), 2), reverse=True)
        text, answer = f"{name} has {a} {item} and gives away {b}. How many {item} are left?", a - b
    else:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        text, answer = f"{name} buys {a} bags with {b} {item} in each bag. How many {item} does {name} have?", a * b
    return {"prompt": text + SUFFIX, "answer": str(answer)}


def main() -> None:
    out = Path(__file__).resolve().parents[1] / "src" / "strop" / "examples" / "rl"
    rng = random.Random(2026)
    splits = {
        "train.jsonl": [problem(rng, i % 3, TRAIN_NAMES, TRAIN_ITEMS) for i in range(240)],
        "held_out.jsonl": [problem(rng, i % 3, EVAL_NAMES, EVAL_ITEMS) for i in range(48)],
    }
    for name, rows in splits.items():
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"wrote {len(rows)} rows to {out / name}")


if __name__ == "__main__":
    main()
