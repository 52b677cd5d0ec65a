"""`strop pipeline PIPELINE.yml`: run the stages of a pipeline (strop.pipeline)."""

from __future__ import annotations

import argparse
from pathlib import Path

from strop.pipeline import run_pipeline


def _run(args: argparse.Namespace) -> int:
    run_pipeline(Path(args.pipeline))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("pipeline", help="run SFT → alignment → (GRPO) → merge → GGUF as resumable stages")
    parser.add_argument("pipeline", help="pipeline YAML")
    parser.set_defaults(func=_run)
