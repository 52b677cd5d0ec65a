"""`strop merge CONFIG --out OUT`: the command-line face of strop.merge.run_merge."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from strop.errors import StropError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the `merge` subcommand (see strop.cli for the contract)."""
    parser = subparsers.add_parser(
        "merge",
        help="merge fine-tuned models (linear, slerp, task arithmetic, TIES, DARE)",
        description="Merge models of one architecture as described by a mergekit-style MERGE.yml.",
    )
    parser.add_argument("config", metavar="CONFIG", help="merge config (YAML)")
    parser.add_argument("--out", help="output model folder (default: the config's output_dir)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it already exists")
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the merge and say where the model went; user errors propagate as StropError."""
    from strop.merge.config import load_config
    from strop.merge.engine import run_merge

    out = args.out or load_config(args.config).output_dir
    if not out:
        raise StropError("no output folder: pass --out OUT or set `output_dir:` in the merge config")
    result = run_merge(Path(args.config), Path(out), overwrite=args.overwrite, progress=not args.no_progress)
    print(f"merged model written to {result}")
    return 0
