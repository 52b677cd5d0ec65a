"""Every objective × every update strategy trains one step on a tiny model, through the real loop.

The grid is built from the registries, so a newly registered objective or strategy joins automatically.
Each objective gets the first sample dataset (below) whose type it reads; it is skipped, with the reason,
only if none fits. NEFTune is switched on in every cell, so its composition with each strategy and
objective is exercised too. One step, micro_batch_size 2, a 64-wide 2-layer model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from strop.objectives import OBJECTIVES
from strop.objectives.rl_common import RLObjective
from strop.objectives.vision import VISION_OBJECTIVES
from strop.strategies import STRATEGIES

WORDS = ["fox", "dog", "world", "review", "two", "four", "quick", "lazy"]

#: (dataset type, rows) in order of preference; an objective takes the first type it reads.
SAMPLE_DATASETS: list[tuple[str, list[dict]]] = [
    (
        "alpaca",
        [{"instruction": f"Say {WORDS[i % 8]}", "output": f"Sentiment: {WORDS[(i + 1) % 8]}"} for i in range(8)],
    ),
    (
        "dpo",
        [
            {
                "prompt": f"Say {WORDS[i % 8]}",
                "chosen": f"{WORDS[i % 8]} indeed",
                "rejected": f"no {WORDS[(i + 3) % 8]}",
            }
            for i in range(8)
        ],
    ),
    (
        "kto",
        [
            {"prompt": f"Say {WORDS[i % 8]}", "completion": f"{WORDS[(i * 3) % 8]}", "label": i % 2 == 0}
            for i in range(8)
        ],
    ),
]

#: Small per-strategy settings so that one step is cheap and does something on a 2-layer model.
STRATEGY_KEYS: dict[str, dict] = {
    "lora": {"lora_r": 4, "lora_alpha": 8},
    "qlora": {"lora_r": 4, "lora_alpha": 8},
    "dora": {"lora_r": 4, "lora_alpha": 8},
    "rslora": {"lora_r": 4, "lora_alpha": 8},
    "prompt_tuning": {"num_virtual_tokens": 3},
    "prefix_tuning": {"num_virtual_tokens": 3},
    "p_tuning_v2": {"num_virtual_tokens": 3},
    "spider": {"spider_warmup_steps": 1, "max_steps": 2},  # one step measures, the second updates
    "houlsby": {"bottleneck_reduction_factor": 8},
    "pfeiffer": {"bottleneck_reduction_factor": 8},
    "galore": {"galore_rank": 4, "galore_update_proj_gap": 1},
    "spectrum": {"spectrum_top_fraction": 0.5},
    "lisa": {"lisa_n_layers": 1, "lisa_step_interval": 1},
    "moe_lora": {"lora_r": 4, "lora_alpha": 8, "moe_lora_experts": 3, "moe_lora_top_k": 2},
}
#: Keys an objective needs to run at all; "{model}" is replaced by the tiny model's path.
OBJECTIVE_KEYS: dict[str, dict] = {
    "distill": {"distill_teacher": "{model}"},  # the tiny model teaches itself (same tokenizer)
    **{
        name: {
            "rewards": [{"type": "length", "max_chars": 12}],
            "num_generations": 2,
            "max_completion_length": 6,
            "mask_truncated_completions": False,  # 6 tokens truncate most completions
            "kl_beta": 0.1,
        }  # a reference pass too: adapter off, or a frozen copy
        for name, objective in OBJECTIVES.items()
        if isinstance(objective, RLObjective)
    },
}
#: The file that marks each kind of artifact: PEFT adapter, full model, moe_lora, bottleneck adapter.
ARTIFACTS = ("adapter_config.json", "model.safetensors", "moe_lora_config.json", "bottleneck_config.json")
#: Strategies that need a model with biases (the tiny Llama has none).
NEEDS_BIASES = {"bitfit"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A 64-wide model gains nothing from intra-op threads, and they spin when the CPU is shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("matrix-data")
    for kind, rows in SAMPLE_DATASETS:
        (folder / f"{kind}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def dataset_for(objective) -> str | None:
    return next((kind for kind, _ in SAMPLE_DATASETS if kind in objective.dataset_types), None)


#: The objectives of text rows; the vision objectives need image rows and train their cells in tests/vlm.
TEXT_OBJECTIVES = sorted(set(OBJECTIVES) - set(VISION_OBJECTIVES))


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("objective", TEXT_OBJECTIVES)
def test_one_step(objective, strategy, tiny_model, tiny_qwen2, datasets_dir, tmp_path, monkeypatch):
    from strop.config import load_config
    from strop.train import loop

    if strategy in ("qlora",):
        pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes")
    kind = dataset_for(OBJECTIVES[objective])
    if kind is None:
        pytest.skip(
            f"no sample dataset for objective {objective}: it reads {OBJECTIVES[objective].dataset_types}; "
            "add one to SAMPLE_DATASETS"
        )
    monkeypatch.setattr(loop, "plot_losses", lambda *a, **k: None)  # matplotlib is not under test here
    model = str(tiny_qwen2 if strategy in NEEDS_BIASES else tiny_model)
    extra = {
        k: v.replace("{model}", model) if isinstance(v, str) else v
        for k, v in OBJECTIVE_KEYS.get(objective, {}).items()
    }
    cfg = {
        "base_model": model,
        "adapter": strategy,
        **extra,
        "rl": None if objective == "sft" else objective,
        "datasets": [{"path": str(datasets_dir / f"{kind}.jsonl"), "type": kind}],
        "sequence_len": 64,
        "micro_batch_size": 2,
        "max_steps": 1,
        "learning_rate": 1e-3,
        "bf16": False,
        "seed": 3,
        "neftune_noise_alpha": 5,
        "output_dir": str(tmp_path / "out"),
        **STRATEGY_KEYS.get(strategy, {}),
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(cfg))
    config, base = load_config(path)
    out = loop.train(config, base)
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(record["loss"]) and record["grad_norm"] > 0, record
    assert any((out / name).is_file() for name in ARTIFACTS)
