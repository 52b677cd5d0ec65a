"""Qwen2-VL without its processor (transformers' needs torchvision, absent here): the part names strop
reads, LoRA kept to the language model, and a batch laid out as strop's data path makes it (patches
concatenated, image_grid_thw, per-token mm_token_type_ids padded) through the model and the SFT loss."""

from __future__ import annotations

import pytest
import torch

from strop.data.tokenize import IGNORE
from strop.vlm.data import collate_sft
from strop.vlm.models import language_linear_names, part_of, set_trainable_parts
from strop.vlm.tiny import build_tokenizer, qwen2_vl_config, qwen2_vl_token_ids


@pytest.fixture(scope="module")
def qwen():
    from transformers import AutoModelForImageTextToText

    tok = build_tokenizer("qwen2_vl")
    ids = qwen2_vl_token_ids(tok)
    torch.manual_seed(0)
    return AutoModelForImageTextToText.from_config(qwen2_vl_config(ids, len(tok))), ids


def test_parts_of_qwen2_vl(qwen):
    model, _ = qwen
    parts = {name: part_of(name) for name, _ in model.named_parameters()}
    assert parts["model.visual.merger.mlp.0.weight"] == "projector"
    assert parts["model.visual.blocks.0.attn.qkv.weight"] == "vision"
    assert parts["model.language_model.layers.0.self_attn.q_proj.weight"] == "language"
    assert parts["lm_head.weight"] == "language"
    names = language_linear_names(model, ["q_proj", "v_proj"])
    assert len(names) == 4 and all(n.startswith("model.language_model.layers.") for n in names)


def _row(image_size: int, ids: dict, seed: int) -> dict:
    """One image of image_size² pixels: (size/14)² patches of 3·2·14·14 values, merged 2×2 into tokens."""
    grid = image_size // 14
    tokens = grid * grid // 4
    text = [5, 6, 7]
    input_ids = [
        ids["bos"],
        *text,
        ids["vision_start_token_id"],
        *[ids["image_token_id"]] * tokens,
        ids["vision_end_token_id"],
        8,
        9,
        ids["eos"],
    ]
    labels = [IGNORE] * (len(input_ids) - 3) + [8, 9, ids["eos"]]
    mm = [1 if t == ids["image_token_id"] else 0 for t in input_ids]
    pixels = torch.randn(grid * grid, 3 * 2 * 14 * 14, generator=torch.Generator().manual_seed(seed))
    return {
        "input_ids": input_ids,
        "labels": labels,
        "vision.pixel_values": pixels,
        "vision.image_grid_thw": torch.tensor([[1, grid, grid]]),
        "vision_tokens.mm_token_type_ids": mm,
    }


def test_batch_of_two_image_sizes_and_a_text_row(qwen):
    from strop.objectives.sft import summed_nll

    model, ids = qwen
    text_row = {"input_ids": [ids["bos"], 5, 6, 8, ids["eos"]], "labels": [IGNORE, IGNORE, IGNORE, 8, ids["eos"]]}
    rows = [_row(56, ids, 0), text_row, _row(28, ids, 1)]
    batch = collate_sft(rows, ids["pad"])
    assert batch["vision.pixel_values"].shape == (16 + 4, 1176)
    assert batch["vision.image_grid_thw"].tolist() == [[1, 4, 4], [1, 2, 2]]
    assert batch["vision.mm_token_type_ids"].shape == batch["input_ids"].shape
    assert batch["vision.mm_token_type_ids"][1].sum() == 0 and batch["vision.mm_token_type_ids"][0].sum() == 4
    set_trainable_parts(model, freeze_vision=True, projector_only=False)
    loss = summed_nll(model, batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.model.visual.blocks[0].attn.qkv.weight.grad is None  # frozen tower
    assert model.model.visual.merger.mlp[0].weight.grad is not None  # the projector learns
    # The batch equals its rows one by one: padding and the text row change nothing for the image rows.
    alone = (
        summed_nll(model, collate_sft(rows[:1], ids["pad"]))
        + summed_nll(model, collate_sft(rows[1:2], ids["pad"]))
        + summed_nll(model, collate_sft(rows[2:], ids["pad"]))
    )
    torch.testing.assert_close(loss, alone, atol=1e-4, rtol=1e-4)
