"""strop as a library, for people who script instead of writing YAML:

    import strop
    result = strop.train("config.yml", learning_rate=1e-4, max_steps=50)
    result.output_dir, result.metrics          # Path, the last logged metrics

    cfg = strop.load_config({"base_model": "...", "datasets": [...]})

A config is a YAML path or a dict of the same keys (Axolotl's included); keyword overrides replace keys.
It goes through the same validation, the same errors (StropError) and the same training loop as
`strop train`, so a script and the command line cannot disagree.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from strop.errors import StropError


@dataclass
class TrainResult:
    """Where a run wrote its artifacts, and what it measured."""

    output_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def _overrides(overrides: dict[str, Any]) -> list[str]:
    return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]


def load_config(config: str | Path | dict[str, Any], **overrides: Any):
    """A validated config and the folder its relative paths resolve against (the YAML's folder, or the
    working folder for a dict)."""
    from strop.config import load_config as load_file

    if isinstance(config, dict):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "config.yml"
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            cfg, _ = load_file(path, _overrides(overrides))
        return cfg, Path.cwd()
    if not isinstance(config, (str, Path)):
        raise StropError(f"strop.load_config: expected a YAML path or a dict, got {type(config).__name__}")
    return load_file(config, _overrides(overrides))


def train(
    config: str | Path | dict[str, Any], *, resume: bool = False, overwrite: bool = False, **overrides: Any
) -> TrainResult:
    """Train as `strop train` does; returns the output folder and the metrics it logged."""
    from strop.train.loop import train as run

    cfg, base_dir = load_config(config, **overrides)
    output_dir = run(cfg, base_dir, resume=resume, overwrite=overwrite)
    if output_dir is None:  # only a dry run returns no folder
        raise StropError("strop.train: the run returned no output folder")
    metrics_file = Path(output_dir) / "metrics.jsonl"
    history = [json.loads(line) for line in metrics_file.read_text().splitlines()] if metrics_file.is_file() else []
    return TrainResult(Path(output_dir), history[-1] if history else {}, history)
