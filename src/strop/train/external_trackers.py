"""External trackers configured with Axolotl's keys: Weights & Biases when `wandb_project` is set,
MLflow when `mlflow_tracking_uri` is set, each only when its package is installed. Neither is ever
required: without the package a run says so once and keeps its metrics in metrics.jsonl (and
TensorBoard). `wandb_mode: offline` (or WANDB_MODE=offline, which wandb reads itself) logs to local
files that `wandb sync` uploads later.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from strop.config import Config


class WandbSink:
    """One W&B run: numeric metrics logged at their step, finished when training ends."""

    def __init__(self, run: Any):
        self.run = run

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        self.run.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)

    def finish(self) -> None:
        self.run.finish()


class MlflowSink:
    """One MLflow run: numeric metrics logged at their step, ended when training ends."""

    def __init__(self, mlflow):
        self.mlflow = mlflow

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        self.mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)

    def finish(self) -> None:
        self.mlflow.end_run()


def _package(name: str, key: str):
    try:
        return __import__(name)
    except ImportError:
        print(
            f"strop: {key} is set but {name} is not installed: metrics stay in metrics.jsonl "
            f"(pip install {name} to log there)",
            file=sys.stderr,
        )
        return None


def open_sinks(cfg: Config, output_dir: Path) -> list:
    """The external trackers the config asks for (W&B, MLflow), or none."""
    sinks: list = []
    if getattr(cfg, "mlflow_tracking_uri", None) and (mlflow := _package("mlflow", "mlflow_tracking_uri")):
        mlflow.set_tracking_uri(cfg.mlflow_tracking_uri)
        if cfg.mlflow_experiment_name:
            mlflow.set_experiment(cfg.mlflow_experiment_name)
        mlflow.start_run(run_name=cfg.mlflow_run_name or Path(output_dir).name)
        sinks.append(MlflowSink(mlflow))
    project = getattr(cfg, "wandb_project", None)
    wandb = _package("wandb", "wandb_project") if project else None
    if wandb is None:
        return sinks
    options = {
        "project": project,
        "entity": cfg.wandb_entity,
        "name": cfg.wandb_name or Path(output_dir).name,
        "config": json.loads(cfg.model_dump_json()),
    }
    if cfg.wandb_run_id:
        options.update(id=cfg.wandb_run_id, resume="allow")
    if cfg.wandb_mode:
        options["mode"] = cfg.wandb_mode
    return [*sinks, WandbSink(wandb.init(**options))]
