"""`strop plan --data FILE... --gpu "1x RTX 4090" --goal chat|reasoning|domain [--config partial.yml] --out pipeline.yml`:
recommend stages and settings from the data, the hardware and the goal; print them with their expected
memory (and time where strop has a measured throughput), then write a pipeline `strop pipeline` runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from strop.train.estimate import GIB


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def print_plan(plan) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"strop plan: {plan.base_model} on {plan.hardware.describe()}, goal {plan.goal}")
    for column in ("stage", "data", "strategy", "rank", "batch", "seq len", "epochs", "lr", "peak GiB", "time"):
        table.add_column(column, justify="left" if column in ("stage", "data", "strategy") else "right")
    for stage in plan.stages:
        c = stage.config
        data = ", ".join(f"{p.path.name} ({p.rows:,} {p.format}, p95 {p.percentile(0.95)} tok)" for p in stage.data)
        rank = str(c["lora_r"]) if stage.strategy in ("lora", "qlora", "dora") else "—"
        batch = f"{c['micro_batch_size']}×{c['gradient_accumulation_steps']}" + (
            " ckpt" if c["gradient_checkpointing"] else ""
        )
        table.add_row(
            stage.name,
            data,
            stage.strategy,
            rank,
            batch,
            str(c["sequence_len"]),
            f"{c['num_epochs']:g}",
            f"{c['learning_rate']:g}",
            f"{stage.estimate.peak / GIB:.2f}",
            _duration(stage.seconds),
        )
    console = Console(width=160)
    console.print(table)
    for stage in plan.stages:
        console.print(f"[bold]{stage.name}[/bold] because")
        for reason in stage.reasons:
            console.print(f"  - {reason}", highlight=False)
    for note in plan.notes:
        console.print(f"note: {note}", highlight=False)


def _run(args: argparse.Namespace) -> int:
    from strop.plan import make_plan, read_partial, write_pipeline

    partial = read_partial(args.config)
    if args.model:
        partial["base_model"] = args.model
    plan = make_plan(args.data, args.gpu, args.goal, partial)
    print_plan(plan)
    written = write_pipeline(plan, Path(args.out), args.overwrite, None if args.no_export else "q4_k_m")
    print(f"strop plan: wrote {', '.join(str(p) for p in written)}. Run: strop pipeline {args.out}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan", help="recommend stages, strategy and settings from data, GPU and goal; write pipeline.yml"
    )
    parser.add_argument(
        "--data", nargs="+", required=True, metavar="FILE", help="dataset files (JSONL, JSON, Parquet, CSV)"
    )
    parser.add_argument("--gpu", required=True, help='"1x RTX 4090", "2x A100 80GB", "H200", "24GB" or cpu')
    parser.add_argument("--goal", required=True, choices=("chat", "reasoning", "domain"))
    parser.add_argument("--config", help="partial training config whose keys every stage keeps (base_model, ...)")
    parser.add_argument("--model", help="base model (default: the partial config's, else smollm2-135m-instruct)")
    parser.add_argument("--out", default="pipeline.yml", help="pipeline file to write (stage configs go beside it)")
    parser.add_argument("--no-export", action="store_true", help="leave out the final GGUF export stage")
    parser.add_argument("--overwrite", action="store_true", help="replace existing pipeline and stage files")
    parser.set_defaults(func=_run)
