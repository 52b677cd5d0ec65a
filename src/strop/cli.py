"""The `strop` command. Each subcommand lives next to the code it drives and registers itself here.

A subcommand module exposes `add_parser(subparsers)`, which adds its parser and sets `func` to a
callable taking the parsed arguments and returning an exit status. User errors (StropError) print a
clear message and exit 2 without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from strop.errors import StropError

COMMAND_MODULES = (
    "strop.train.command",
    "strop.chat",
    "strop.config",
    "strop.reward_score",
    "strop.evaluate",
    "strop.generate_data",
    "strop.merge.command",
    "strop.export.command",
    "strop.pipeline",
    "strop.strategies.spectrum_command",
    "strop.estimate",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="strop", description="Fine-tune, align, merge and export LLMs.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except StropError as err:
        print(f"strop: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("strop: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
