"""Axolotl's own example configs as fixtures: each is loaded unchanged except base_model (a tiny local random
model of its family), its dataset paths (small local files in the shape its dataset type documents),
output_dir and max_steps. See configs/README.md for where each file comes from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

CONFIGS = Path(__file__).parent / "configs"
CONFIG_NAMES = sorted(p.name for p in CONFIGS.glob("*.y*ml"))
WORDS = ["fox", "dog", "world", "review", "two", "four", "quick", "lazy"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def alpaca_rows(n: int) -> list[dict]:
    return [
        {
            "instruction": f"Say {WORDS[i % 8]} {i}",
            "input": "x" * (i % 3),
            "output": f"Sentiment: {'positive' if i % 2 else 'negative'} {WORDS[i % 3]}",
        }
        for i in range(n)
    ]


def _family(base_model: str) -> str:
    name = base_model.lower()
    for family in ("qwen3", "qwen2", "mistral"):
        if family in name:
            return family
    return "llama"


def build_family_model(folder: Path, family: str, tokenizer_from: Path) -> Path:
    """A tiny random model of `family`, with the shared tiny tokenizer."""
    import torch
    from transformers import (
        AutoTokenizer,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    classes = {
        "mistral": (MistralConfig, MistralForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
        "qwen3": (Qwen3Config, Qwen3ForCausalLM),
    }
    tok = AutoTokenizer.from_pretrained(tokenizer_from)
    tok.save_pretrained(folder)
    config_cls, model_cls = classes[family]
    torch.manual_seed(0)
    config = config_cls(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tok),
        max_position_embeddings=512,
        head_dim=16,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
    )
    model_cls(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def family_models(tmp_path_factory, tiny_model) -> dict[str, Path]:
    models = {"llama": tiny_model}
    for family in ("mistral", "qwen2", "qwen3"):
        models[family] = build_family_model(tmp_path_factory.mktemp(f"tiny-{family}"), family, tiny_model)
    return models


def _turns(i: int) -> tuple[str, str, str]:
    return f"Say {WORDS[i % 8]} {i}", f"Sentiment: positive {WORDS[i % 3]}", f"Sentiment: negative {WORDS[(i + 1) % 3]}"


def rows_for(spec: dict, n: int = 24) -> list[dict]:
    """Rows in the shape Axolotl documents for the dataset entry's type and field-mapping keys."""
    kind = spec["type"]
    if kind == "alpaca":
        return alpaca_rows(n)
    rows = []
    for i in range(n):
        user, good, bad = _turns(i)
        if kind == "chat_template":
            field = spec.get("field_messages", "messages")
            role, content = (
                (spec.get("message_property_mappings") or {}).get("role", "role"),
                (spec.get("message_property_mappings") or {}).get("content", "content"),
            )
            names = ("human", "gpt") if role == "from" else ("user", "assistant")
            rows.append({field: [{role: names[0], content: user}, {role: names[1], content: good}]})
        elif kind == "chat_template.default":
            rows.append(
                {
                    spec.get("field_messages", "messages"): [{"role": "user", "content": user}],
                    spec.get("field_chosen", "chosen"): {"role": "assistant", "content": good},
                    spec.get("field_rejected", "rejected"): {"role": "assistant", "content": bad},
                }
            )
        elif kind == "chat_template.argilla":
            rows.append(
                {
                    "prompt": user,
                    "chosen": [{"role": "user", "content": user}, {"role": "assistant", "content": good}],
                    "rejected": [{"role": "user", "content": user}, {"role": "assistant", "content": bad}],
                }
            )
        elif kind == "llama3.ultra":
            rows.append({"prompt": user, "completion": good if i % 2 else bad, "label": bool(i % 2)})
        elif kind == "bradley_terry.chat_template":
            rows.append({"system": "Be brief.", "input": user, "chosen": good, "rejected": bad})
        elif kind.endswith("prompt_transform"):
            rows.append({"question": f"What is {i} plus {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"})
        else:
            raise AssertionError(f"the fixture has no rows for dataset type {kind}")
    return rows


def localize(
    name: str, folder: Path, models: dict[str, Path], max_steps: int = 1, short_rollouts: bool = False
) -> Path:
    """A copy of config `name` in `folder`, changed only where the brief allows, and the data it reads."""
    raw = yaml.safe_load((CONFIGS / name).read_text())
    raw["base_model"] = str(models[_family(raw["base_model"])])
    for index, spec in enumerate(raw["datasets"]):
        spec["path"] = str(write_jsonl(folder / f"data{index}.jsonl", rows_for(spec)))
        spec.pop("split", None)
        spec.pop("name", None)
    raw["output_dir"] = str(folder / "out")
    raw["max_steps"] = max_steps
    if short_rollouts and raw.get("trl", {}).get("max_completion_length"):
        raw["trl"]["max_completion_length"] = 8  # CPU time: 64 rollouts of 512 tokens take minutes
    for module in CONFIGS.glob("*.py"):
        shutil.copy(module, folder / module.name)
    path = folder / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
