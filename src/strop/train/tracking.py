"""Where a run reports: a rich progress bar, metrics.jsonl, TensorBoard when installed, a loss-curve PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from strop.safe_io import disk_errors


class Tracker:
    """Appends every logged step to metrics.jsonl (and TensorBoard) and shows it on the progress bar.
    A resumed run finds metrics.jsonl already cut back to its checkpoint (train/output_dir.py)."""

    def __init__(self, output_dir: Path, total_steps: int, start_step: int):
        self.path = output_dir / "metrics.jsonl"
        with disk_errors(self.path):
            self.file = self.path.open("a")
        self.writer = self._tensorboard(output_dir, start_step)
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        self.task = self.progress.add_task("train", total=total_steps, completed=start_step, info="")
        self.sinks: list = []  # external trackers (train/external_trackers.py): log(step, metrics), finish()

    @staticmethod
    def _tensorboard(output_dir: Path, start_step: int):
        """A TensorBoard writer that, on resume, hides the earlier events of the steps being redone."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(output_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)

    def __enter__(self) -> Tracker:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()
        self.file.close()
        for sink in self.sinks:
            sink.finish()
        if self.writer is not None:
            self.writer.close()

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        record = {"step": step, **metrics}
        with disk_errors(self.path):
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        for sink in self.sinks:
            sink.log(step, metrics)
        if self.writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, step)
        shown = [
            f"{k} {_short(metrics[k])}"
            for k in ("loss", "eval_loss", "reward", "eval_reward", "lr", "tokens_per_s")
            if k in metrics
        ]
        shown += [f"{k} {_short(v)}" for k, v in metrics.items() if k.startswith("loss/")]  # per dataset
        self.progress.update(self.task, info="  ".join(shown))

    def advance(self, step: int) -> None:
        self.progress.update(self.task, completed=step)

    def print(self, *args) -> None:
        self.progress.console.print(*args)


class NullTracker:
    """What ranks other than 0 log to under torchrun: nothing (rank 0 logs the metrics of all ranks)."""

    def __init__(self, output_dir: Path, total_steps: int, start_step: int):
        pass

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        pass

    def advance(self, step: int) -> None:
        pass

    def print(self, *args) -> None:
        pass


def _short(value: float) -> str:
    return f"{value:.2e}" if abs(value) < 1e-2 and value else f"{value:.4g}"


def plot_losses(metrics_path: Path, out_png: Path) -> Path | None:
    """Loss (and eval loss, and each dataset's loss in a mixture) against step, and for RL runs the reward (and eval reward) beside it, then one
    panel per configured evaluator (`eval/<name>/<metric>`) and for MoE models the router's health
    (strop/moe/monitor.py); returns None when there is nothing to plot."""
    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
    curves = {
        key: [(r["step"], r[key]) for r in records if key in r]
        for key in ("loss", "eval_loss", "reward", "eval_reward")
    }
    if not curves["loss"]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("loss", "eval_loss")] + ([("reward", "eval_reward")] if curves["reward"] else [])
    evaluators = _evaluator_curves(records)
    router = [r for r in records if "moe_layers" in r]
    width = len(panels) + len(evaluators) + bool(router)
    fig, axes = plt.subplots(1, width, figsize=(7 * width, 4), squeeze=False)
    for ax, (name, lines) in zip(axes[0][len(panels) :], evaluators.items()):
        for key, points in lines.items():
            ax.plot(*zip(*points), "o-", label=key)
        ax.set_xlabel("step")
        ax.set_title(f"evaluator {name}")
        ax.grid(alpha=0.3)
        ax.legend()
    if router:
        _router_panel(axes[0][-1], router)
    per_dataset = sorted({k for r in records for k in r if k.startswith("loss/")})
    for ax, (train, held_out) in zip(axes[0], panels):
        ax.plot(*zip(*curves[train]), label=f"train {train}")
        for key in per_dataset if train == "loss" else ():
            ax.plot(*zip(*[(r["step"], r[key]) for r in records if key in r]), alpha=0.6, label=key)
        if curves[held_out]:
            ax.plot(*zip(*curves[held_out]), "o-", label=held_out.replace("_", " "))
        ax.set_xlabel("step")
        ax.set_ylabel(train)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def _evaluator_curves(records: list[dict]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """`eval/<name>/<metric>` values by evaluator name, then metric (counts such as tokens left out)."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for record in records:
        for key, value in record.items():
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "eval" and parts[2] != "tokens":
                out.setdefault(parts[1], {}).setdefault(parts[2], []).append((record["step"], value))
    return out


def _router_panel(ax, records: list[dict]) -> None:
    """Per MoE layer, the expert-load entropy / log E (1 = balanced, 0 = collapsed), and the mean
    router entropy: the survey's "monitor routing continuously"."""
    steps = [r["step"] for r in records]
    for index in range(len(records[-1]["moe_layers"])):
        ax.plot(
            steps,
            [r["moe_layers"][index]["load_entropy"] if index < len(r["moe_layers"]) else None for r in records],
            label=f"layer {index} load entropy",
            alpha=0.7,
        )
    ax.plot(steps, [r["moe_router_entropy_mean"] for r in records], "k--", label="mean router entropy")
    ax.set_xlabel("step")
    ax.set_ylabel("entropy / log E")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
