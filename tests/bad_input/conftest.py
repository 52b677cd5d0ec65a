"""Session fixtures of the bad-input tests: the good models every bad case starts from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from bad_input_world import World, save_llama


@pytest.fixture(scope="session")
def session_models(tmp_path_factory, tiny_model, tiny_qwen2) -> dict[str, Path]:
    """A LoRA adapter trained one step on the tiny model, and tiny Llamas that differ from it in one
    dimension each (for merges that must be refused)."""
    from strop.cli import main

    root = tmp_path_factory.mktemp("bad-input-models")
    vocab = json.loads((tiny_model / "config.json").read_text())["vocab_size"]
    data = root / "data.jsonl"
    data.write_text(
        "".join(json.dumps({"instruction": f"Say {i}", "output": "Sentiment: positive"}) + "\n" for i in range(8))
    )
    config = root / "adapter.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "base_model": str(tiny_model),
                "adapter": "lora",
                "lora_r": 4,
                "lora_alpha": 8,
                "datasets": [{"path": str(data), "type": "alpaca"}],
                "sequence_len": 64,
                "micro_batch_size": 4,
                "max_steps": 1,
                "bf16": False,
                "output_dir": str(root / "adapter"),
            }
        )
    )
    assert main(["train", str(config)]) == 0
    return {
        "tiny": tiny_model,
        "qwen": tiny_qwen2,
        "adapter": root / "adapter",
        "wide": save_llama(root / "wide", tiny_model, vocab_size=vocab, intermediate_size=96),
        "deep": save_llama(root / "deep", tiny_model, vocab_size=vocab, num_hidden_layers=3),
        "wide_vocab": save_llama(root / "wide_vocab", tiny_model, vocab_size=vocab + 8),
    }


@pytest.fixture
def world(session_models, tmp_path) -> World:
    return World(tmp=tmp_path, **session_models)
