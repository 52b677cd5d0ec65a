"""strop.train / strop.load_config from Python, and W&B / MLflow logging through fake modules."""

from __future__ import annotations

import json
import sys
import types

import pytest

import strop
from strop.errors import StropError


def _rows(n: int) -> list[dict]:
    return [
        {"instruction": f"Say {i}", "output": f"Sentiment: {'positive' if i % 2 else 'negative'}"} for i in range(n)
    ]


@pytest.fixture
def keys(tmp_path, tiny_model) -> dict:
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows(8)))
    return {
        "base_model": str(tiny_model),
        "adapter": "lora",
        "lora_r": 2,
        "datasets": [{"path": str(data), "type": "alpaca"}],
        "sequence_len": 64,
        "micro_batch_size": 4,
        "bf16": False,
        "output_dir": str(tmp_path / "out"),
    }


class FakeRun:
    def __init__(self, options):
        self.options, self.logged, self.finished = options, [], False

    def log(self, metrics, step):
        self.logged.append((step, metrics))

    def finish(self):
        self.finished = True


def test_train_from_a_dict_logs_to_wandb_and_mlflow(keys, monkeypatch):
    runs = []
    fake = types.ModuleType("wandb")
    fake.init = lambda **options: runs.append(FakeRun(options)) or runs[-1]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    mlflow = types.ModuleType("mlflow")
    calls = []
    for name in ("set_tracking_uri", "set_experiment", "start_run", "log_metrics", "end_run"):
        setattr(mlflow, name, lambda *a, _name=name, **k: calls.append((_name, a, k)))
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    result = strop.train(
        {
            **keys,
            "wandb_project": "proj",
            "wandb_mode": "offline",
            "wandb_watch": "gradients",
            "mlflow_tracking_uri": "file:///tmp/mlruns",
            "mlflow_experiment_name": "exp",
        },
        max_steps=2,
        learning_rate=1e-3,
    )
    assert [c[0] for c in calls] == [
        "set_tracking_uri",
        "set_experiment",
        "start_run",
        "log_metrics",
        "log_metrics",
        "end_run",
    ]
    assert calls[4][2]["step"] == 2 and calls[4][1][0]["loss"] == result.metrics["loss"]
    assert result.output_dir.name == "out" and [h["step"] for h in result.history] == [1, 2]
    assert result.metrics == result.history[-1] and "loss" in result.metrics
    (run,) = runs
    assert (run.options["project"], run.options["mode"], run.options["name"]) == ("proj", "offline", "out")
    assert [step for step, _ in run.logged] == [1, 2] and run.logged[-1][1]["loss"] == result.metrics["loss"]
    assert run.finished


def test_load_config_from_a_dict_with_overrides(keys, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed: the run must not need it
    cfg, _ = strop.load_config({**keys, "tf32": True}, lora_r=16)
    assert cfg.lora_r == 16
    assert "strop: ignored: tf32" in capsys.readouterr().err
    with pytest.raises(StropError, match=r"unknown key 'lr'"):
        strop.load_config({**keys, "lr": 1})
