"""The shipped two-stage recipe (projector alignment, then LoRA with text rows mixed in) through
`strop pipeline`, on the tiny LLaVA instead of the hub model the example names."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from strop.cli import main
from strop.vlm.shapes import SHIPPED


@pytest.mark.slow
def test_two_stage_pipeline(tmp_path, tiny_llava):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    quick = {"max_steps": 2, "micro_batch_size": 4, "bf16": False, "sequence_len": 256, "val_set_size": 0}
    spec = yaml.safe_load((SHIPPED / "pipeline.yml").read_text())
    spec["base_model"], spec["output_dir"] = str(tiny_llava), str(tmp_path / "pipe")
    for stage in spec["stages"]:
        stage["config"] = str(SHIPPED / stage["config"])
        stage["set"] = quick | ({"lora_r": 4} if stage["name"] == "instruct" else {})
    path = tmp_path / "pipeline.yml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["pipeline", str(path)]) == 0

    align = json.loads((tmp_path / "pipe" / "align" / "stage.json").read_text())
    instruct = json.loads((tmp_path / "pipe" / "instruct" / "stage.json").read_text())
    before, after = load_file(tiny_llava / "model.safetensors"), load_file(f"{align['model']}/model.safetensors")
    assert all(torch.equal(before[n], after[n]) == ("multi_modal_projector" not in n) for n in before)
    merged = instruct["merged"]
    assert AutoModelForImageTextToText.from_pretrained(merged) is not None
    assert AutoProcessor.from_pretrained(merged).image_processor is not None
