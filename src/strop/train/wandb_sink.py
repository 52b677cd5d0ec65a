"""Weights & Biases, configured with Axolotl's keys: metrics go to W&B when `wandb_project` is set and
the `wandb` package is installed. It is never required: without the package a run says so once and
keeps its metrics in metrics.jsonl (and TensorBoard). `wandb_mode: offline` (or WANDB_MODE=offline,
which wandb reads itself) logs to local files that `wandb sync` uploads later.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


class WandbSink:
    """One W&B run: numeric metrics logged at their step, finished when training ends."""

    def __init__(self, run):
        self.run = run

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        self.run.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)

    def finish(self) -> None:
        self.run.finish()


def open_sinks(cfg, output_dir: Path) -> list[WandbSink]:
    """The external trackers the config asks for (W&B), or none."""
    project = getattr(cfg, "wandb_project", None)
    if not project:
        return []
    try:
        import wandb
    except ImportError:
        print("strop: wandb_project is set but wandb is not installed: metrics stay in metrics.jsonl "
              "(pip install wandb to log to Weights & Biases)", file=sys.stderr)
        return []
    options = {"project": project, "entity": cfg.wandb_entity, "name": cfg.wandb_name or Path(output_dir).name,
               "config": json.loads(cfg.model_dump_json())}
    if cfg.wandb_run_id:
        options.update(id=cfg.wandb_run_id, resume="allow")
    if cfg.wandb_mode:
        options["mode"] = cfg.wandb_mode
    return [WandbSink(wandb.init(**options))]
