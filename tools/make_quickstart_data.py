"""Regenerate the quickstart's review-sentiment dataset (deterministic; the output is committed).

The task, "reply with exactly `Sentiment: positive` or `Sentiment: negative`", is one the base model
does not follow on its own (it answers in free prose), so held-out exact match shows what training did.
Held-out reviews use products and phrasings that never occur in training.
"""

import json
import random
from pathlib import Path

TRAIN_PRODUCTS = [
    "blender",
    "backpack",
    "desk lamp",
    "phone case",
    "coffee grinder",
    "yoga mat",
    "kettle",
    "running shoes",
    "notebook",
    "umbrella",
    "water bottle",
    "headphones",
    "office chair",
    "toaster",
    "rain jacket",
    "keyboard",
    "frying pan",
    "tent",
    "alarm clock",
    "sunglasses",
]
EVAL_PRODUCTS = [
    "bicycle helmet",
    "rice cooker",
    "winter coat",
    "desk fan",
    "board game",
    "travel mug",
    "hair dryer",
    "garden hose",
    "pillow",
    "webcam",
    "suitcase",
    "wall clock",
]
POSITIVE = [
    "works perfectly and I use it every day",
    "exceeded my expectations",
    "is sturdy and well made",
    "was worth every penny",
    "arrived quickly and looks great",
    "is the best purchase I made this year",
    "does exactly what it promises",
    "feels premium and works flawlessly",
    "made my mornings easier",
    "is comfortable and reliable",
]
NEGATIVE = [
    "broke after two days",
    "is flimsy and cheaply made",
    "stopped working within a week",
    "was a complete waste of money",
    "arrived damaged and support never answered",
    "is much smaller than advertised",
    "smells awful and feels cheap",
    "never worked properly",
    "fell apart the first time I used it",
    "is noisy and unreliable",
]
EVAL_POSITIVE = ["I would happily buy it again", "my whole family loves it", "it is simply excellent"]
EVAL_NEGATIVE = ["I regret buying it", "it was a total disappointment", "I am returning it tomorrow"]
INSTRUCTIONS = [
    "Classify the sentiment of this review.",
    "What is the sentiment of the following review?",
    "Is this review positive or negative?",
]


def row(instruction: str, review: str, label: str) -> dict:
    return {"instruction": instruction, "input": review, "output": f"Sentiment: {label}"}


def main() -> None:
    rng = random.Random(7)
    out = Path(__file__).resolve().parents[1] / "src" / "strop" / "examples" / "quickstart"
    train = []
    for product in TRAIN_PRODUCTS:
        for label, phrases in (("positive", POSITIVE), ("negative", NEGATIVE)):
            for phrase in rng.sample(phrases, 3):
                train.append(row(rng.choice(INSTRUCTIONS), f"The {product} {phrase}.", label))
    rng.shuffle(train)
    held_out = []
    for product in EVAL_PRODUCTS:
        for label, phrases in (("positive", EVAL_POSITIVE), ("negative", EVAL_NEGATIVE)):
            held_out.append(row(rng.choice(INSTRUCTIONS), f"I bought a {product} and {rng.choice(phrases)}.", label))
    rng.shuffle(held_out)
    (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (out / "held_out.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held_out))
    print(len(train), "train rows,", len(held_out), "held-out rows")


if __name__ == "__main__":
    main()
