"""`strop estimate CONFIG.yml`: trainable parameters and peak training memory per strategy, before loading
(strop.train.estimate)."""

from __future__ import annotations

import argparse

from strop.train.estimate import GIB, estimates_for, process_overhead_bytes


def _gib(value: float) -> str:
    return f"{value / GIB:.2f}"


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from strop.config import load_config

    cfg, _ = load_config(args.config, args.set)
    rows, shapes, bf16 = estimates_for(cfg)
    table = Table(
        title=f"strop estimate: {cfg.base_model}, {cfg.micro_batch_size} × {cfg.sequence_len} tokens a "
        f"micro-batch, {'bf16 autocast' if bf16 else 'float32'}"
        f"{', gradient checkpointing' if cfg.gradient_checkpointing else ''} (GiB)"
    )
    for column in ("strategy", "trainable", "share", "weights", "gradients", "optimizer", "activations", "peak"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for i, row in enumerate(rows):
        label = row.strategy + (" (configured)" if i == 0 else "")
        table.add_row(
            label,
            f"{row.trainable:,}",
            f"{100 * row.trainable / row.total:.3f}%",
            _gib(row.weights),
            _gib(row.gradients),
            _gib(row.optimizer),
            _gib(row.activations),
            _gib(row.peak),
        )
    Console(width=140).print(table)
    print(
        f"{shapes.total:,} parameters, {shapes.layers} layers, hidden {shapes.hidden}, vocab {shapes.vocab}. "
        f"Add the runtime's own overhead: this process holds {_gib(process_overhead_bytes())} GiB on the CPU "
        "now; a CUDA context takes about 0.5 GiB."
    )
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("estimate", help="trainable parameters and peak memory per strategy, before loading")
    parser.add_argument("config", help="training config (YAML)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.set_defaults(func=_run)
