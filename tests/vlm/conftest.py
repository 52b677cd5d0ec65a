"""A tiny random LLaVA (CLIP tower, MLP projector, Llama decoder) with its processor, built locally, and
configs for it on the shapes dataset that ships with strop."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from strop.vlm.shapes import SHIPPED as SHAPES


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory) -> Path:
    from strop.vlm.shapes import corpus
    from strop.vlm.tiny import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny-llava"), "llava", corpus=corpus(), image_size=56)


@pytest.fixture(scope="session")
def llava_processor(tiny_llava):
    from strop.vlm.models import load_processor

    return load_processor(tiny_llava)


@pytest.fixture
def vision_config(tmp_path, tiny_llava):
    """Write a config for the tiny LLaVA; keyword arguments override keys."""

    def make(**overrides) -> Path:
        cfg = {
            "base_model": str(tiny_llava),
            "adapter": "lora",
            "lora_r": 4,
            "lora_alpha": 8,
            "datasets": [{"path": str(SHAPES / "train.jsonl"), "type": "vision_chat"}],
            "sequence_len": 256,
            "micro_batch_size": 4,
            "max_steps": 2,
            "learning_rate": 1e-2,
            "bf16": False,
            "output_dir": str(tmp_path / "out"),
            "seed": 1,
        }
        cfg.update(overrides)
        path = tmp_path / "config.yml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    return make
