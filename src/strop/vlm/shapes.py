"""The tiny shapes dataset that ships with strop: coloured shapes on white, with their names.

Drawn with PIL (`python -m strop.vlm.shapes FOLDER` writes it again; the copy in
strop/examples/vision/ was made that way). Each shape is drawn at a seeded random size and position, so
held-out images are new pictures of known (colour, shape) names, and a model that answers them right has
learned to read the image, not the file. Files:

    images/*.png        56 × 56 RGB images, a few hundred bytes each
    captions.jsonl      stage 1 (projector alignment): "Describe the image." → "a red circle"
    train.jsonl         stage 2: "What colour is the shape?" / "What shape is this?" → one word
    held_out.jsonl      the same questions on pictures never trained on
    text_only.jsonl     text chat rows to mix in (text_only_ratio)
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

#: The copy that ships with strop.
SHIPPED = Path(__file__).resolve().parent.parent / "examples" / "vision"
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (235, 200, 20)}
SHAPES = ("circle", "square", "triangle")
QUESTIONS = {"colour": "What colour is the shape?", "shape": "What shape is this?"}
SIZE = 56
TEXT_ROWS = [
    ("What is two plus two?", "four"),
    ("Name a colour of the sky.", "blue"),
    ("How many sides has a triangle?", "three"),
    ("What is the opposite of yes?", "no"),
    ("Say hello.", "hello"),
    ("How many sides has a square?", "four"),
]


def draw(shape: str, colour: str, rng: random.Random):
    """One picture: the shape filled with the colour, at a random size and position."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (SIZE, SIZE), "white")
    pen = ImageDraw.Draw(image)
    side = rng.randint(SIZE // 2, SIZE - 8)
    x, y = rng.randint(2, SIZE - side - 2), rng.randint(2, SIZE - side - 2)
    box = (x, y, x + side, y + side)
    fill = COLOURS[colour]
    if shape == "circle":
        pen.ellipse(box, fill=fill)
    elif shape == "square":
        pen.rectangle(box, fill=fill)
    else:
        pen.polygon([(x + side / 2, y), (x, y + side), (x + side, y + side)], fill=fill)
    return image


def _question_rows(image: str, colour: str, shape: str) -> list[dict]:
    answers = {"colour": colour, "shape": shape}
    return [
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image", "path": image}, {"type": "text", "text": QUESTIONS[kind]}],
                },
                {"role": "assistant", "content": answers[kind]},
            ]
        }
        for kind in QUESTIONS
    ]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def write_dataset(folder: Path, train_per_pair: int = 3, held_out_per_pair: int = 1, seed: int = 0) -> Path:
    """Write the images and the JSONL files into `folder`."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    captions, train, held_out = [], [], []
    for colour in COLOURS:
        for shape in SHAPES:
            for index in range(train_per_pair + held_out_per_pair):
                name = f"images/{colour}_{shape}_{index}.png"
                draw(shape, colour, rng).save(folder / name, optimize=True)
                if index >= train_per_pair:
                    held_out += _question_rows(name, colour, shape)
                    continue
                train += _question_rows(name, colour, shape)
                captions.append(
                    {
                        "messages": [
                            {
                                "role": "user",
                                "content": [
                                    {"type": "image", "path": name},
                                    {"type": "text", "text": "Describe the image."},
                                ],
                            },
                            {"role": "assistant", "content": f"a {colour} {shape}"},
                        ]
                    }
                )
    _write_jsonl(folder / "captions.jsonl", captions)
    _write_jsonl(folder / "train.jsonl", train)
    _write_jsonl(folder / "held_out.jsonl", held_out)
    _write_jsonl(
        folder / "text_only.jsonl",
        [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in TEXT_ROWS],
    )
    return folder


def corpus() -> list[str]:
    """Words of the dataset, for training a tiny tokenizer that knows them."""
    return [
        " ".join(COLOURS),
        " ".join(SHAPES),
        *QUESTIONS.values(),
        "Describe the image. a red circle",
        *(f"{q} {a}" for q, a in TEXT_ROWS),
    ]


def held_out_accuracy(target: str, folder: Path = SHIPPED, max_new_tokens: int = 3) -> float:
    """Share of held_out.jsonl questions whose greedy answer starts with the right word."""
    from strop.models.saved import load_for_chat
    from strop.vlm.generate import answer_images, chat_processor

    rows = [json.loads(line) for line in (Path(folder) / "held_out.jsonl").read_text().splitlines() if line]
    model, _ = load_for_chat(target)
    answers = answer_images(
        model, chat_processor(target), [row["messages"][:1] for row in rows], max_new_tokens, folders=[Path(folder)]
    )
    right = sum(answer.split()[:1] == [row["messages"][1]["content"]] for answer, row in zip(answers, rows))
    return right / len(rows)


if __name__ == "__main__":
    print(write_dataset(Path(sys.argv[1] if len(sys.argv) > 1 else "shapes")))
