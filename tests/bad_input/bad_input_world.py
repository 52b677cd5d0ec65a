"""The shared material of the bad-input tests: good models, an adapter and merge inputs built once per
session, and per-case helpers that write the one bad file a case is about.

A uniquely named module (not conftest) so that `import` cannot pick up another folder's helpers.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

COMPLETE_MARKERS = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json", "Modelfile")

REWARDS_PY = """
def raises(prompts, completions, rows):
    raise ValueError("boom")

def too_short(prompts, completions, rows):
    return [1.0]

def nones(prompts, completions, rows):
    return [None for _ in completions]

def text(prompts, completions, rows):
    return "high"
"""


def looks_complete(path: Path) -> bool:
    """Whether `path` could pass for a finished artifact: a GGUF file, or a folder holding weights."""
    if path.is_file():
        return path.suffix == ".gguf"
    if not path.is_dir():
        return False
    return any((path / name).exists() for name in COMPLETE_MARKERS) or any(path.glob("*.gguf"))


def save_llama(folder: Path, tokenizer_from: Path | None = None, **sizes) -> Path:
    """A tiny random Llama (64 wide unless `sizes` say otherwise), with a copy of a tokenizer if given."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=300,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**{**config, **sizes})).save_pretrained(folder, safe_serialization=True)
    if tokenizer_from is not None:
        for file in tokenizer_from.iterdir():
            if file.name.startswith(("tokenizer", "special_tokens", "chat_template")):
                shutil.copy(file, folder / file.name)
    return folder


def corrupt_copy(source: Path, folder: Path, file: str, keep: float | None = None, text: bytes | str = b"") -> Path:
    """A copy of model folder `source` in which `file` is cut to the first `keep` share of its bytes,
    or replaced by `text`."""
    shutil.copytree(source, folder)
    target = folder / file
    if keep is not None:
        data = target.read_bytes()
        target.write_bytes(data[: int(len(data) * keep)])
    else:
        target.write_bytes(text if isinstance(text, bytes) else text.encode())
    return folder


@dataclass
class World:
    """Session material (models) plus the case's own folder `tmp`, where every case writes its files."""

    tiny: Path
    qwen: Path
    adapter: Path
    wide: Path
    deep: Path
    wide_vocab: Path
    tmp: Path

    @property
    def out(self) -> Path:
        """Where every case's command would write: nothing that looks finished may appear there."""
        return self.tmp / "out"

    def file(self, name: str, content: str | bytes | list) -> str:
        """Write `content` (text, bytes, or rows as JSON lines) to tmp/name; its path."""
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, list):
            content = "".join(json.dumps(row) + "\n" for row in content)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        return str(path)

    def rows(self, n: int = 16) -> list[dict]:
        return [
            {"instruction": f"Say {word} {i}", "output": f"Sentiment: {word}"}
            for i, word in enumerate(["fox", "dog", "world", "review"] * (n // 4))
        ]

    def config(self, data: str | None = None, dtype: str = "alpaca", **overrides) -> str:
        """A training config for the tiny model (a good alpaca file unless `data` names another)."""
        data = data or self.file("data.jsonl", self.rows())
        cfg = {
            "base_model": str(self.tiny),
            "adapter": "lora",
            "lora_r": 4,
            "lora_alpha": 8,
            "datasets": [{"path": data, "type": dtype}],
            "sequence_len": 128,
            "micro_batch_size": 4,
            "max_steps": 1,
            "learning_rate": 1e-3,
            "bf16": False,
            "output_dir": str(self.out),
            "seed": 1,
        }
        cfg.update(overrides)
        return self.file("config.yml", yaml.safe_dump(cfg))

    def broken(self, source: Path, file: str, keep: float | None = None, text: bytes | str = b"") -> str:
        """A copy of `source` at tmp/m with `file` damaged (see corrupt_copy)."""
        return str(corrupt_copy(source, self.tmp / "m", file, keep, text))

    def data_config(self, name: str, content, dtype: str = "alpaca", **overrides) -> str:
        return self.config(self.file(name, content), dtype, **overrides)

    def rl_config(self, function: str | None = "rewards.py:raises", rows: list | None = None, **overrides) -> str:
        """A one-step GRPO config over a prompt file; `function` is the function reward it uses."""
        self.file("rewards.py", REWARDS_PY)
        prompts = rows or [{"prompt": f"Say {w} {i}"} for i, w in enumerate(["fox", "dog", "world", "review"])]
        rewards = [{"type": "function", "function": function}] if function else []
        keys = {
            "rl": "grpo",
            "rewards": rewards,
            "num_generations": 2,
            "max_completion_length": 4,
            "micro_batch_size": 2,
            "sequence_len": 64,
            **overrides,
        }
        return self.config(self.file("prompts.jsonl", prompts), "prompt", **keys)

    def merge_config(self, method: str = "linear", models: list | None = None, **keys) -> str:
        models = models if models is not None else [self.tiny, self.tiny]
        entries = [m if isinstance(m, dict) else {"model": str(m)} for m in models]
        return self.file("merge.yml", yaml.safe_dump({"merge_method": method, "models": entries, **keys}))
