"""Image conversations → ids, labels and image tensors: labels on assistant text only, image tokens never
labels, several images per conversation, text rows mixed at a ratio, and bad image rows named."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from strop.data import DataReport
from strop.data.tokenize import IGNORE
from strop.errors import StropError
from strop.vlm.data import Encoder, collate_sft, encode_conversation, image_tensors, mix_text_rows, parse_conversation
from strop.vlm.shapes import SHIPPED as SHAPES

IMAGE = str(SHAPES / "images" / "red_circle_0.png")
TOKENS_PER_IMAGE = 16  # 56 px / 14 px patches = 4 × 4 features (CLS dropped)


def encode(processor, row: dict, train_on_inputs: bool = False, folders=()) -> dict:
    encoder = Encoder(processor, list(folders), allow_urls=False)
    return encode_conversation(encoder, parse_conversation(row, "d.jsonl:1"), "d.jsonl:1", train_on_inputs)


def user(*parts) -> dict:
    return {"role": "user", "content": list(parts)}


def test_labels_are_the_assistant_text_only(llava_processor):
    row = {
        "messages": [
            user({"type": "image", "path": IMAGE}, {"type": "text", "text": "What colour is the shape?"}),
            {"role": "assistant", "content": "red"},
        ]
    }
    example = encode(llava_processor, row)
    tok = llava_processor.tokenizer
    labelled = [t for t in example["labels"] if t != IGNORE]
    assert tok.decode(labelled) == "red<|im_end|>\n"  # the reply and its end of turn, as the template writes it
    image_id = tok.convert_tokens_to_ids("<image>")
    assert example["input_ids"].count(image_id) == TOKENS_PER_IMAGE
    assert example["vision_images"] == [Path(IMAGE).read_bytes()]  # the row keeps the image's bytes
    assert tuple(image_tensors(llava_processor, example)["vision.pixel_values"].shape) == (1, 3, 56, 56)


def test_several_images_and_turns_image_tokens_never_trained(llava_processor):
    row = {
        "messages": [
            user(
                {"type": "image", "path": IMAGE},
                {"type": "image", "path": IMAGE},
                {"type": "text", "text": "Describe the image."},
            ),
            {"role": "assistant", "content": "a red circle"},
            user({"type": "image", "path": IMAGE}, "What shape is this?"),
            {"role": "assistant", "content": "circle"},
        ]
    }
    image_id = llava_processor.tokenizer.convert_tokens_to_ids("<image>")
    for train_on_inputs in (False, True):
        example = encode(llava_processor, row, train_on_inputs)
        assert image_tensors(llava_processor, example)["vision.pixel_values"].shape[0] == 3
        assert example["input_ids"].count(image_id) == 3 * TOKENS_PER_IMAGE
        assert image_id not in example["labels"]
    labelled = llava_processor.tokenizer.decode([t for t in encode(llava_processor, row)["labels"] if t != IGNORE])
    assert labelled == "a red circle<|im_end|>\ncircle<|im_end|>\n"


def test_base64_image_equals_the_file(llava_processor):
    data = base64.b64encode(Path(IMAGE).read_bytes()).decode()
    rows = [
        {"messages": [user({"type": "image", **source}, "Describe the image."), {"role": "assistant", "content": "x"}]}
        for source in ({"path": IMAGE}, {"base64": data}, {"url": f"data:image/png;base64,{data}"})
    ]
    first, *others = [encode(llava_processor, row) for row in rows]
    for other in others:
        assert first["vision_images"] == other["vision_images"]


def test_collate_concatenates_images_and_pads_text(llava_processor):
    with_image = encode(
        llava_processor,
        {"messages": [user({"type": "image", "path": IMAGE}, "Hi"), {"role": "assistant", "content": "red"}]},
    )
    text_only = encode(llava_processor, {"messages": [user("Say hello."), {"role": "assistant", "content": "hello"}]})
    batch = collate_sft([with_image, text_only, with_image], 0, llava_processor)
    assert batch["input_ids"].shape == (3, len(with_image["input_ids"]))
    assert batch["vision.pixel_values"].shape[0] == 2  # the text row adds no image
    assert int(batch["attention_mask"][1].sum()) == len(text_only["input_ids"])


@pytest.mark.parametrize("ratio,text_rows,expected_text", [(0.5, 3, 4), (0.2, 10, 1), (0.0, 5, 0)])
def test_text_mix_ratio(ratio, text_rows, expected_text):
    images = [{"id": f"i{i}"} for i in range(4)]
    texts = [{"id": f"t{i}"} for i in range(text_rows)]
    report = DataReport()
    rows = mix_text_rows(images, texts, ratio, seed=0, report=report)
    # n_text = ratio * n_image / (1 - ratio): 0.5 * 4 / 0.5 = 4 (3 rows cycled), 0.2 * 4 / 0.8 = 1, 0
    assert sum(r["id"].startswith("t") for r in rows) == expected_text
    assert rows[:4] == images
    assert f"text-only rows: {expected_text} of {4 + expected_text}" in report.notes[0]


def _row(tmp_path: Path, content) -> Path:
    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps({"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": "red"}]}) + "\n"
    )
    return path


@pytest.mark.parametrize(
    "part,message",
    [
        (
            {"type": "image", "path": "missing.png"},
            r"d.jsonl:1: messages\[0\].content\[0\]: image file not found: missing.png",
        ),
        (
            {"type": "image", "path": "not_an_image.png"},
            r"d.jsonl:1: messages\[0\].content\[0\]: image file .*not_an_image.png is not a readable image",
        ),
        (
            {"type": "image", "base64": "%%%"},
            r"d.jsonl:1: messages\[0\].content\[0\]: field 'base64' is not valid base64",
        ),
        (
            {"type": "image", "url": "https://example.com/a.png"},
            r"d.jsonl:1: messages\[0\].content\[0\]: image URL .* set allow_image_urls: true",
        ),
        (
            {"type": "image"},
            r"d.jsonl:1: messages\[0\].content\[0\]: an image part needs exactly one of 'path', 'url' or 'base64'",
        ),
        (
            {"type": "video", "path": "a.mp4"},
            r"d.jsonl:1: messages\[0\].content\[0\]: a part must be an object with type text, image",
        ),
    ],
)
def test_bad_image_rows_name_file_line_and_field(capsys, tmp_path, vision_config, part, message):
    from strop.cli import main

    (tmp_path / "not_an_image.png").write_text("hello")
    data = _row(tmp_path, [part, {"type": "text", "text": "What colour?"}])
    config = vision_config(datasets=[{"path": str(data), "type": "vision_chat"}])
    assert main(["train", str(config)]) == 2
    import re

    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_assistant_image_and_packing_refused(llava_processor, tmp_path):
    with pytest.raises(StropError, match=r"d.jsonl:1: messages\[1\]: an assistant turn holds an image"):
        parse_conversation(
            {"messages": [user("hi"), {"role": "assistant", "content": [{"type": "image", "path": IMAGE}]}]},
            "d.jsonl:1",
        )
    from strop.config import load_config
    from strop.vlm.data import build_vision_sft_data

    path = tmp_path / "c.yml"
    path.write_text(
        json.dumps({"datasets": [{"path": str(SHAPES / "train.jsonl"), "type": "vision_chat"}], "sample_packing": True})
    )
    cfg, base = load_config(path)
    with pytest.raises(StropError, match="sample_packing: image conversations are not packed"):
        build_vision_sft_data(cfg, llava_processor, base)


def test_a_processor_without_chat_template_is_refused(tmp_path, tiny_llava):
    import shutil

    from strop.vlm.models import load_processor

    folder = tmp_path / "no-template"
    shutil.copytree(tiny_llava, folder)
    (folder / "chat_template.jinja").unlink()
    with pytest.raises(StropError, match="the processor has no chat template"):
        load_processor(folder)
