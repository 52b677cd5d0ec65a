"""What a run prints: the plan before training, sample answers side by side, and the summary after."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from rich.console import Console
from rich.table import Table

from strop.objectives import Objective
from strop.run_types import RunState
from strop.runtime import distributed
from strop.strategies.kernels import describe_kernels

console = Console()


class PlannedRun(RunState, Protocol):
    """The run the plan describes (strop.train.loop.Run, which imports this module)."""

    @property
    def objective(self) -> Objective: ...


def print_plan(run: PlannedRun, push_to: str | None = None) -> None:
    """The run's plan table; `push_to` describes the Hub repository the finished run goes to."""
    cfg = run.cfg
    trainable, total = run.strategy.count_parameters(run.model)
    tokens = sum(len(r["input_ids"]) for r in run.train_rows)
    table = Table(title="strop train: plan", show_header=False)
    rows = [
        ("model", f"{cfg.base_model} ({run.model_path})"),
        ("objective", run.objective.name),
        ("strategy", f"{run.strategy.name} {run.strategy.describe(cfg)}".strip()),
        ("kernels", describe_kernels(run.model)),
        ("trainable parameters", f"{trainable:,} of {total:,} ({100 * trainable / total:.3f}%)"),
        ("train rows", f"{len(run.train_rows):,} ({tokens:,} tokens{', packed' if cfg.sample_packing else ''})"),
        ("validation rows", f"{len(run.val_rows):,}"),
        (
            "batch",
            f"{cfg.micro_batch_size} x {cfg.gradient_accumulation_steps} accumulation"
            + (f" x {distributed.world_size()} processes" if distributed.active() else "")
            + f", sequence_len {cfg.sequence_len}",
        ),
        ("steps", f"{run.total_steps:,} ({run.micro_batches_per_epoch:,} micro-batches an epoch)"),
        ("device", distributed.describe(cfg, run.device)),
        ("output_dir", cfg.output_dir),
    ]
    if push_to:
        rows.append(("push to hub", push_to))
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    for note in run.notes:
        console.print(f"[yellow]note:[/] {note}")


def print_samples(prompts: list[str], before: list[str], after: list[str]) -> None:
    table = Table(title="answers to held-out prompts: base model vs tuned model", show_lines=True)
    table.add_column("prompt", ratio=2)
    table.add_column("base", ratio=3)
    table.add_column("tuned", ratio=3)
    for prompt, old, new in zip(prompts, before, after):
        table.add_row(prompt, old, new)
    console.print(table)


def print_summary(run: RunState, output_dir: Path, final_eval: dict[str, float] | None, plot: Path | None) -> None:
    kind = run.strategy.artifact_kind
    console.print(f"[bold green]done.[/] {kind} written to {output_dir.resolve()}")
    for key, value in (final_eval or {}).items():
        console.print(f"final {key.replace('_', ' ')}: {value:.4f}")
    console.print(f"metrics: {output_dir / 'metrics.jsonl'}" + (f"   loss curve: {plot}" if plot else ""))
    for note in run.notes:  # repeated from the plan: rows dropped or truncated shape what was learned
        console.print(f"[yellow]note:[/] {note}")
