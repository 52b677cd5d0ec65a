"""Every vision objective trains a step with LoRA on the tiny LLaVA through the real loop, and vision SFT
with every update strategy (the text matrix, tests/test_matrix.py, has no image data and skips them)."""

from __future__ import annotations

import json

import pytest

from strop.cli import main
from strop.objectives import OBJECTIVES
from strop.strategies import STRATEGIES
from strop.vlm.shapes import SHIPPED

VISION = sorted(name for name in OBJECTIVES if name.startswith("vision_"))


def _pairs(tmp_path):
    rows = [
        {
            "prompt": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "path": str(SHIPPED / "images" / f"{c}_circle_0.png")},
                        {"type": "text", "text": "What colour is the shape?"},
                    ],
                }
            ],
            "chosen": c,
            "rejected": w,
        }
        for c, w in (("red", "blue"), ("blue", "red"), ("green", "yellow"), ("yellow", "green"))
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("objective", VISION)
def test_every_vision_objective_with_lora(tmp_path, vision_config, objective):
    rl = objective.removeprefix("vision_")
    data = (
        {"path": str(SHIPPED / "train.jsonl"), "type": "vision_chat"}
        if rl == "sft"
        else {"path": str(_pairs(tmp_path)), "type": "vision_dpo"}
    )
    config = vision_config(rl=None if rl == "sft" else rl, datasets=[data], max_steps=1, micro_batch_size=2)
    assert main(["train", str(config)]) == 0
    assert (tmp_path / "out" / "adapter_config.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", sorted(set(STRATEGIES) - {"lora"}))
def test_vision_sft_with_every_strategy(tmp_path, vision_config, strategy):
    config = vision_config(adapter=strategy, max_steps=1, micro_batch_size=2)
    assert main(["train", str(config)]) == 0
    assert any(p.suffix == ".safetensors" for p in (tmp_path / "out").iterdir())
