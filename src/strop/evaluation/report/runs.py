"""What a report reads from a run's output folder, all of it optional except metrics.jsonl or a
saved config: strop_config.yml (the resolved config), metrics.jsonl (curves, speed, memory),
evals.json (the evaluators' last metrics and samples) and forgetting.json (base vs tuned)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from strop.errors import StropError

CURVES = ("loss", "eval_loss", "reward", "eval_reward")


@dataclass
class RunRecord:
    name: str
    folder: Path
    config: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    evals: dict[str, Any] = field(default_factory=dict)
    forgetting: dict[str, Any] = field(default_factory=dict)

    def curve(self, key: str) -> list[tuple[float, float]]:
        return [(r["step"], float(r[key])) for r in self.records if isinstance(r.get(key), (int, float))]

    def curve_keys(self) -> list[str]:
        """Loss and reward curves, then every evaluator metric (`eval/<name>/<metric>`), as logged."""
        logged = dict.fromkeys(k for r in self.records for k in r)
        return [k for k in CURVES if k in logged] + [
            k for k in logged if k.startswith("eval/") and not k.endswith("/tokens")
        ]

    def summary(self) -> dict[str, Any]:
        """Steps, final losses, throughput and memory, from the last logged records."""
        last = self.records[-1] if self.records else {}
        out: dict[str, Any] = {"steps": last.get("step")}
        for key in ("loss", "eval_loss", "reward", "eval_reward"):
            values = self.curve(key)
            if values:
                out[f"final {key}"] = values[-1][1]
        rates = [r["tokens_per_s"] for r in self.records if "tokens_per_s" in r]
        out["tokens/s"] = rates[-1] if rates else None
        out["elapsed s"] = last.get("elapsed_s")
        peaks = [r["gpu_peak_gib"] for r in self.records if "gpu_peak_gib" in r]
        out["peak GPU GiB"] = max(peaks) if peaks else None
        return out

    def final_evals(self) -> dict[str, float]:
        """The last value of every held-out metric: evaluators, eval loss/reward, forgetting changes."""
        out: dict[str, float] = {}
        for record in self.records:
            for key, value in record.items():
                if (key.startswith(("eval/", "forgetting/")) or key in ("eval_loss", "eval_reward")) and isinstance(
                    value, (int, float)
                ):
                    out[key] = value
        return out


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise StropError(f"{path}: cannot read it as JSON ({err})") from err


def _metrics(path: Path) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            raise StropError(f"{path}:{number}: not a JSON object ({err})") from err
        if not isinstance(record, dict) or "step" not in record:
            raise StropError(f"{path}:{number}: a metrics record needs a 'step'")
        records.append(record)
    return records


def load_run(folder: str | Path, name: str | None = None) -> RunRecord:
    """A run's record; a clear error when the folder holds no run."""
    folder = Path(folder)
    config_path, metrics_path = folder / "strop_config.yml", folder / "metrics.jsonl"
    if not folder.is_dir():
        raise StropError(f"report: {folder}: no such folder")
    if not config_path.is_file() and not metrics_path.is_file():
        raise StropError(
            f"report: {folder} holds neither strop_config.yml nor metrics.jsonl: not a strop training output"
        )
    run = RunRecord(name or folder.name, folder)
    if config_path.is_file():
        try:
            run.config = yaml.safe_load(config_path.read_text()) or {}
        except yaml.YAMLError as err:
            raise StropError(f"{config_path}: not valid YAML: {' '.join(str(err).split())}") from err
    if metrics_path.is_file():
        run.records = _metrics(metrics_path)
    if (folder / "evals.json").is_file():
        run.evals = _json(folder / "evals.json")
    if (folder / "forgetting.json").is_file():
        run.forgetting = _json(folder / "forgetting.json")
    return run


def run_names(folders: list[Path]) -> list[str]:
    """Short distinct names: the folder name, with its parent's when two runs share one (stage/train)."""
    names = [f.name for f in folders]
    if len(set(names)) < len(names):
        names = [f"{f.parent.name}/{f.name}" for f in folders]
    if len(set(names)) < len(names):
        names = [str(f) for f in folders]
    return names


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted keys to compact JSON values, for comparing configs key by key."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return out


def config_defaults() -> dict[str, str]:
    """Every config key's default, flattened as run configs are (required keys have none)."""
    from strop.config import config_class

    fields = config_class().model_fields.items()
    return flatten({name: f.get_default(call_default_factory=True) for name, f in fields if not f.is_required()})


def config_differences(runs: list[RunRecord]) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Keys whose values differ between runs (for a single run: from the defaults), and every run's
    flat config."""
    flat = {run.name: flatten(run.config) for run in runs}
    keys = list(dict.fromkeys(k for values in flat.values() for k in values))
    if len(runs) > 1:
        return [k for k in keys if len({values.get(k, "—") for values in flat.values()}) > 1], flat
    defaults = config_defaults()
    return [k for k in keys if flat[runs[0].name][k] != defaults.get(k)], flat
