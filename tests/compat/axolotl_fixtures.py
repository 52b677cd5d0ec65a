"""Axolotl's own example configs as fixtures: each is loaded unchanged except base_model (strop's default
model, SmolLM2-135M-Instruct), its dataset paths (a few rows in a small local file, in the shape its
dataset type documents), output_dir, max_steps and the per-config CPU-time overrides of CPU_OVERRIDES.
See configs/README.md for where each file comes from and why each override is there."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from tests.conftest import alpaca_rows, write_jsonl

CONFIGS = Path(__file__).parent / "configs"
CONFIG_NAMES = sorted(p.name for p in CONFIGS.glob("*.y*ml"))
ROWS = 8
WORDS = ["fox", "dog", "world", "review", "two", "four", "quick", "lazy"]

#: Keys changed beyond base_model / dataset paths / output_dir / max_steps, because a CPU step would
#: otherwise take minutes (each is listed in configs/README.md).
CPU_OVERRIDES: dict[str, dict[str, dict[str, int]]] = {
    # 8 rollouts of 512 tokens each, sampled token by token on the CPU
    "qwen2.5--grpo-docs.yml": {"trl": {"max_completion_length": 8}},
}


def _turns(i: int) -> tuple[str, str, str]:
    return f"Say {WORDS[i % 8]} {i}", f"Sentiment: positive {WORDS[i % 3]}", f"Sentiment: negative {WORDS[(i + 1) % 3]}"


def rows_for(spec: dict, n: int = ROWS) -> list[dict]:
    """Rows in the shape Axolotl documents for the dataset entry's type and field-mapping keys."""
    kind = spec["type"]
    if kind in ("alpaca", "alpaca:phi"):
        return alpaca_rows(n)
    rows = []
    for i in range(n):
        user, good, bad = _turns(i)
        if kind == "chat_template":
            field = spec.get("field_messages", "messages")
            mapping = spec.get("message_property_mappings") or {}
            role, content = mapping.get("role", "role"), mapping.get("content", "content")
            names = ("system", "human", "gpt") if role == "from" else ("system", "user", "assistant")
            turns = [(names[1], user), (names[2], good)]
            rows.append({field: [{role: r, content: c} for r, c in [(names[0], "Be brief."), *turns]]})
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
        elif kind == "pretrain":
            rows.append({spec.get("text_column", "text"): f"{user}. {good}. The quick brown fox {i}."})
        elif kind.endswith("prompt_transform"):
            rows.append({"question": f"What is {i} plus {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"})
        else:
            raise AssertionError(f"the fixture has no rows for dataset type {kind}")
    return rows


def _merge(raw: dict, overrides: dict) -> None:
    for key, value in overrides.items():
        if isinstance(value, dict):
            _merge(raw.setdefault(key, {}), value)
        else:
            raw[key] = value


def localize(name: str, folder: Path, model: Path, max_steps: int | None = 1) -> Path:
    """A copy of config `name` in `folder`, changed only where configs/README.md says, and the data it
    reads. max_steps None keeps the config's own (the dry run of the config as written)."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = yaml.safe_load((CONFIGS / name).read_text())
    raw["base_model"] = str(model)
    if raw.get("model_type") and not raw["model_type"].startswith("Auto"):
        raw["model_type"] = "LlamaForCausalLM"  # the architecture class goes with base_model (SmolLM2 is a Llama)
    for key in ("datasets", "pretraining_dataset"):
        for index, spec in enumerate(raw.get(key) or []):
            spec["path"] = str(write_jsonl(folder / f"{key}{index}.jsonl", rows_for(spec)))
            spec.pop("split", None)  # hub-only: the local file is the split
            spec.pop("name", None)
    raw["output_dir"] = str(folder / "out")
    if max_steps is not None:
        raw["max_steps"] = max_steps
        # one micro-batch: the step takes the same path at a quarter of the CPU time
        raw["gradient_accumulation_steps"] = 1
        _merge(raw, CPU_OVERRIDES.get(name, {}))
    for module in CONFIGS.glob("*.py"):
        shutil.copy(module, folder / module.name)
    path = folder / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
