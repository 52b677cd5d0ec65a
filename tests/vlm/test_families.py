"""Idefics3 / SmolVLM (SigLIP tower, pixel-shuffle connector), Gemma 3 (SigLIP tower, pooled projector,
per-token token_type_ids) and LLaVA, each through its own processor: rows with two, one and no images
collate into one batch whose loss equals the rows' losses one by one (Idefics3's padding images are all
zero, which that model drops)."""

from __future__ import annotations

import pytest
import torch

from strop.vlm.data import Encoder, collate_sft, encode_conversation, image_tensors, parse_conversation
from strop.vlm.models import language_linear_names, part_of
from strop.vlm.shapes import SHIPPED


def build(tmp_path_factory, family: str):
    from transformers import AutoModelForImageTextToText

    from strop.vlm.models import load_processor
    from strop.vlm.tiny import build_tiny_vlm

    folder = build_tiny_vlm(tmp_path_factory.mktemp(f"tiny-{family}"), family)
    return AutoModelForImageTextToText.from_pretrained(folder), load_processor(folder)


@pytest.fixture(scope="module")
def idefics3(tmp_path_factory):
    return build(tmp_path_factory, "idefics3")


#: family → (image token, tokens an image at 56 px, image tensor key, batch shape of it)
FAMILIES = {
    "idefics3": ("<image>", 4, "pixel_values", (2, 2, 3, 56, 56)),
    "gemma3": ("<image_soft_token>", 4, "pixel_values", (3, 3, 56, 56)),
    "llava": ("<image>", 4, "pixel_values", (3, 3, 28, 28)),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_mixed_image_counts_batch_equals_rows(tmp_path_factory, idefics3, family):
    from strop.objectives.sft import summed_nll

    model, processor = idefics3 if family == "idefics3" else build(tmp_path_factory, family)
    token, per_image, key, shape = FAMILIES[family]
    encoder = Encoder(processor, [SHIPPED], allow_urls=False)
    image = {"type": "image", "path": "images/green_square_0.png"}
    rows = [
        encode_conversation(
            encoder,
            parse_conversation(
                {
                    "messages": [
                        {"role": "user", "content": [image] * count + [{"type": "text", "text": "What colour?"}]},
                        {"role": "assistant", "content": "green"},
                    ]
                },
                "d.jsonl:1",
            ),
            "d.jsonl:1",
            False,
        )
        for count in (2, 1, 0)
    ]
    # Rows keep image bytes; collation's image processor remakes exactly the processor's own tensors.
    own = processor(
        text=[encoder.render(parse_conversation({"messages": [{"role": "user", "content": [image] * 2}]}, "x"))],
        images=[encoder.images(parse_conversation({"messages": [{"role": "user", "content": [image] * 2}]}, "x"), "x")],
        return_tensors="pt",
    )
    remade = image_tensors(processor, rows[0])
    assert remade and all(torch.equal(v, own[k.removeprefix("vision.")]) for k, v in remade.items())
    image_id = processor.tokenizer.convert_tokens_to_ids(token)
    assert [r["input_ids"].count(image_id) for r in rows] == [2 * per_image, per_image, 0]
    batch = collate_sft(rows, processor.tokenizer.pad_token_id, processor)
    assert batch[f"vision.{key}"].shape == shape
    if family == "idefics3":  # the one-image row's second image is padding
        assert (
            batch["vision.pixel_values"][1, 1].abs().sum() == 0
            and batch["vision.pixel_attention_mask"][1, 1].sum() == 0
        )
    if family == "gemma3":  # per-token image marks, padded with 0
        assert batch["vision.token_type_ids"].sum() == 3 * per_image
    model.eval()
    with torch.no_grad():
        together = summed_nll(model, batch)
        alone = sum(summed_nll(model, collate_sft([row], processor.tokenizer.pad_token_id, processor)) for row in rows)
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)


def test_parts_of_idefics3(idefics3):
    model, _ = idefics3
    parts = {name.split(".")[1]: part_of(name) for name, _ in model.named_parameters() if name.startswith("model.")}
    assert parts == {"connector": "projector", "vision_model": "vision", "text_model": "language"}
    assert all(".text_model." in n for n in language_linear_names(model, "all-linear"))
