"""KTO on image conversations: unpaired `vision_kto` rows {prompt with images, completion, label} (and
`vision_dpo` pairs, split into a desirable and an undesirable example), trained through `strop train` on
the tiny LLaVA; the mismatched KL completions and the reference cache keys tell images apart."""

from __future__ import annotations

import json

import pytest
import torch

from strop.cli import main
from strop.vlm.shapes import SHIPPED as SHAPES

COLOURS = ("red", "blue", "green", "yellow")


def _prompt(colour: str, shape: str = "circle") -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image", "path": str(SHAPES / "images" / f"{colour}_{shape}_0.png")},
                {"type": "text", "text": "What colour is the shape?"},
            ],
        }
    ]


def _kto_rows(tmp_path):
    rows = []
    for i, colour in enumerate(COLOURS):
        wrong = COLOURS[(i + 1) % len(COLOURS)]
        rows.append({"prompt": _prompt(colour), "completion": colour, "label": True})
        rows.append({"prompt": _prompt(colour), "completion": wrong, "label": False})
    path = tmp_path / "kto.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_kto_on_image_prompts(tmp_path, vision_config):
    data = [{"path": str(_kto_rows(tmp_path)), "type": "vision_kto"}]
    config = vision_config(rl="kto", rl_beta=1.0, datasets=data, max_steps=3, micro_batch_size=8, val_set_size=0)
    assert main(["train", str(config)]) == 0
    metrics = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "loss" in m]
    assert steps[0]["loss"] == pytest.approx(0.5, abs=1e-3)  # policy = reference at step 1: 1 - σ(0)
    assert steps[-1]["loss"] < steps[0]["loss"]
    assert steps[-1]["rewards/chosen"] > steps[-1]["rewards/rejected"]  # right colours gain on wrong ones


def test_kto_rows_are_told_apart_by_their_images(llava_processor, tmp_path, vision_config):
    """Two rows with the same prompt text and completion but different images: different cache keys,
    and each one's mismatched completion comes from the other (a different image is a different prompt)."""
    from strop.config import load_config
    from strop.objectives.vision import build_vision_unpaired_data

    rows = [
        {"prompt": _prompt("red", s), "completion": c, "label": True}
        for s, c in (("circle", "red"), ("square", "blue"))
    ]
    path = tmp_path / "k.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg, base = load_config(vision_config(datasets=[{"path": str(path), "type": "vision_kto"}]))
    train, _, _ = build_vision_unpaired_data(cfg, llava_processor, base)
    first, second = sorted(train, key=lambda r: r["where"])
    assert first["input_ids"][: first["prompt_len"]] == second["input_ids"][: second["prompt_len"]]
    assert first["key"] != second["key"]
    assert first["kl_ids"] == second["input_ids"][second["prompt_len"] :]


def test_each_half_of_a_kto_batch_carries_its_rows_images(llava_processor, tmp_path, vision_config):
    from strop.config import load_config
    from strop.objectives import objective_for

    cfg, base = load_config(
        vision_config(rl="kto", datasets=[{"path": str(_kto_rows(tmp_path)), "type": "vision_kto"}])
    )
    objective = objective_for(cfg)
    train, _, _ = objective.build_data(cfg, None, base)
    rows = train[:3]
    batch = objective.collate(rows, 0)
    alone = [objective.collate([r], 0) for r in rows]
    for half in (0, 1):
        inputs = objective.sequences(batch, half)
        assert inputs["input_ids"].shape[0] == len(rows)
        pixels = [k for k in inputs if k.startswith("vision.")]
        assert pixels
        for key in pixels:
            expected = torch.cat([a[key][: a[key].shape[0] // 2] for a in alone])
            assert torch.equal(inputs[key][: expected.shape[0]], expected), key


def test_kto_label_must_be_a_boolean(capsys, tmp_path, vision_config):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": _prompt("red"), "completion": "red", "label": "yes"}) + "\n")
    assert main(["train", str(vision_config(rl="kto", datasets=[{"path": str(path), "type": "vision_kto"}]))]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:1" in err and "label" in err
