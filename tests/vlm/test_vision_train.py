"""Training a tiny LLaVA through `strop train`: LoRA on the language model only, the adapter reloaded by
PEFT and merged with identical outputs, stage 1 (projector only), DPO on image prompts, chat --image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from strop.cli import main
from strop.vlm.shapes import SHIPPED as SHAPES


def image_batch(processor):
    from strop.vlm.data import Encoder

    encoder = Encoder(processor, [SHAPES], allow_urls=False)
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "path": "images/blue_square_3.png"},
                {"type": "text", "text": "What colour is the shape?"},
            ],
        }
    ]
    return dict(
        processor(text=[encoder.render(messages, True)], images=encoder.images(messages, "t"), return_tensors="pt")
    )


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch).logits


def test_lora_adapter_reloads_and_merges_with_identical_outputs(tmp_path, vision_config, tiny_llava, llava_processor):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    assert main(["train", str(vision_config())]) == 0
    out = tmp_path / "out"
    targets = json.loads((out / "adapter_config.json").read_text())["target_modules"]
    assert targets and all("language_model" in name for name in targets)  # vision tower and projector left out
    assert AutoProcessor.from_pretrained(out).image_processor is not None  # the processor is saved with it

    batch = image_batch(llava_processor)
    base = logits(AutoModelForImageTextToText.from_pretrained(tiny_llava), batch)
    adapted = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(tiny_llava), str(out))
    with_adapter = logits(adapted, batch)
    assert not torch.allclose(with_adapter, base, atol=1e-4)  # training changed something

    from strop.export.merge_lora import merge_lora

    merged = merge_lora(tiny_llava, out, tmp_path / "merged")
    merged_logits = logits(AutoModelForImageTextToText.from_pretrained(merged), batch)
    torch.testing.assert_close(merged_logits, with_adapter, atol=1e-5, rtol=1e-5)
    assert AutoProcessor.from_pretrained(merged).tokenizer.chat_template
    image = str(SHAPES / "images" / "red_circle_0.png")
    assert main(["chat", str(out), "--image", image, "--prompt", "What colour?", "--max-new-tokens", "2"]) == 0


def test_projector_only_changes_the_projector_alone(tmp_path, vision_config, tiny_llava):
    config = vision_config(
        adapter=None,
        train_projector_only=True,
        datasets=[{"path": str(SHAPES / "captions.jsonl"), "type": "vision_chat"}],
    )
    assert main(["train", str(config)]) == 0
    before, after = load_file(tiny_llava / "model.safetensors"), load_file(tmp_path / "out" / "model.safetensors")
    assert before.keys() == after.keys()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all("multi_modal_projector" in name for name in changed)
    assert {n for n in before if "multi_modal_projector" in n} == changed


def test_projector_only_refuses_an_adapter(capsys, vision_config):
    assert main(["train", str(vision_config(train_projector_only=True))]) == 2
    assert "train_projector_only trains the projector's own weights" in capsys.readouterr().err


def test_full_fine_tuning_keeps_the_vision_tower_frozen(tmp_path, vision_config, tiny_llava):
    assert main(["train", str(vision_config(adapter=None, max_steps=1))]) == 0
    before, after = load_file(tiny_llava / "model.safetensors"), load_file(tmp_path / "out" / "model.safetensors")
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert not any("vision_tower" in name for name in changed)
    assert any("language_model" in name for name in changed) and any("multi_modal_projector" in n for n in changed)


def _pairs(tmp_path: Path) -> Path:
    rows = []
    for colour, wrong in (("red", "blue"), ("green", "yellow"), ("blue", "red"), ("yellow", "green")):
        for shape in ("circle", "square"):
            rows.append(
                {
                    "prompt": [
                        {
                            "role": "user",
                            "content": [
                                {"type": "image", "path": str(SHAPES / "images" / f"{colour}_{shape}_0.png")},
                                {"type": "text", "text": "What colour is the shape?"},
                            ],
                        }
                    ],
                    "chosen": colour,
                    "rejected": wrong,
                }
            )
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_dpo_on_image_prompts(tmp_path, vision_config):
    config = vision_config(rl="dpo", datasets=[{"path": str(_pairs(tmp_path)), "type": "vision_dpo"}], max_steps=3)
    assert main(["train", str(config)]) == 0
    metrics = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    first = next(m for m in metrics if "loss" in m)
    assert first["loss"] == pytest.approx(0.6931, abs=1e-3)  # policy = reference at step 1: -log σ(0) = log 2
    assert metrics[-1]["rewards/margins"] > 0  # the chosen colour gains on the rejected one


def test_image_pair_cache_keys_differ_by_image(llava_processor, tmp_path, vision_config):
    from strop.config import load_config
    from strop.objectives.vision import build_vision_pair_data

    rows = [
        {
            "prompt": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "path": str(SHAPES / "images" / f"red_{s}_0.png")},
                        {"type": "text", "text": "Colour?"},
                    ],
                }
            ],
            "chosen": "red",
            "rejected": "blue",
        }
        for s in ("circle", "square")
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg, base = load_config(vision_config(datasets=[{"path": str(path), "type": "vision_dpo"}]))
    train, _, _ = build_vision_pair_data(cfg, llava_processor, base)
    assert train[0]["input_ids"] == train[1]["input_ids"] and train[0]["key"] != train[1]["key"]


def test_chat_with_an_image(capsys, tiny_llava):
    image = SHAPES / "images" / "red_circle_0.png"
    code = main(
        [
            "chat",
            str(tiny_llava),
            "--image",
            str(image),
            "--prompt",
            "What colour is the shape?",
            "--max-new-tokens",
            "3",
        ]
    )
    assert code == 0 and capsys.readouterr().out.strip()
    assert main(["chat", str(tiny_llava), "--image", "nope.png", "--prompt", "x"]) == 2
    assert "--image: file not found: nope.png" in capsys.readouterr().err


@pytest.mark.parametrize("adapter", ["qlora", "ia3"])
def test_other_adapters_stay_on_the_language_model(tmp_path, vision_config, adapter):
    assert main(["train", str(vision_config(adapter=adapter, max_steps=1))]) == 0
    saved = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert saved["target_modules"] and all("language_model" in name for name in saved["target_modules"])
    if adapter == "ia3":  # the feed-forward scales are the language model's down projections
        assert saved["feedforward_modules"] and all(n.endswith("down_proj") for n in saved["feedforward_modules"])


def test_bad_image_in_a_preference_prompt(capsys, tmp_path, vision_config):
    rows = [
        {
            "prompt": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "Colour?"}, {"type": "image", "path": "gone.png"}],
                }
            ],
            "chosen": "red",
            "rejected": "blue",
        }
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n" + json.dumps(rows[0]) + "\n")
    assert main(["train", str(vision_config(rl="dpo", datasets=[{"path": str(path), "type": "vision_dpo"}]))]) == 2
    assert "pairs.jsonl:2: prompt[0].content[1]: image file not found: gone.png" in capsys.readouterr().err


def test_text_rows_mixed_at_the_ratio_are_logged(tmp_path, vision_config):
    # 36 caption rows with images; text_only_ratio 0.25 → 0.25 · 36 / 0.75 = 12 text rows (6 read, cycled)
    config = vision_config(
        datasets=[
            {"path": str(SHAPES / "captions.jsonl"), "type": "vision_chat"},
            {"path": str(SHAPES / "text_only.jsonl"), "type": "chat"},
        ],
        text_only_ratio=0.25,
        micro_batch_size=16,
        max_steps=3,
        learning_rate=1e-3,
    )
    assert main(["train", str(config)]) == 0
    metrics = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "text_only_rows" in m]
    assert len(steps) == 3  # one epoch: 48 rows in 3 steps of 16
    assert sum(m["text_only_rows"] for m in steps) == 12 and sum(m["image_rows"] for m in steps) == 36


def test_estimate_reads_a_vlm_config(capsys, vision_config):
    assert main(["estimate", str(vision_config())]) == 0
    assert "lora (configured)" in capsys.readouterr().out
