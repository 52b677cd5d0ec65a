"""The `strop` command. Each subcommand is a module of strop.commands (one per command) listed here.

A subcommand module exposes `add_parser(subparsers)`, which adds its parser and sets `func` to a
callable taking the parsed arguments and returning an exit status.

One error path for every command: a StropError is the user's to fix (a bad file, config, model or
function), so it prints one `strop: error:` line naming the culprit and exits 2, with no traceback
unless `--debug` asks for one. Anything else is a bug in strop: it keeps its traceback and says how to
report it, exit 1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

from strop.errors import StropError

COMMAND_MODULES = (
    "strop.commands.train",
    "strop.commands.chat",
    "strop.commands.config",
    "strop.commands.reward_score",
    "strop.commands.eval",
    "strop.commands.report",
    "strop.commands.data",
    "strop.commands.merge",
    "strop.commands.export",
    "strop.commands.pipeline",
    "strop.commands.spectrum",
    "strop.commands.estimate",
    "strop.commands.moe",
    "strop.commands.plan",
)
DEBUG_HELP = "print the traceback of an error too (or set STROP_DEBUG=1)"


def _ranged(kind: type, low: float, high: float | None = None, low_open: bool = False):
    """An argparse type: a `kind` number in [low, high] (or (low, high] when low_open)."""
    where = f"{'(' if low_open else '['}{low:g}, {'∞)' if high is None else f'{high:g}]'}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a {'whole ' if kind is int else ''}number, got {text!r}"
            ) from None
        if value != value or value < low or (low_open and value == low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be in {where}, got {text}")
        return value

    return parse


#: Range of every numeric option, by destination name, checked for every command that has it: a
#: negative token count or a fraction of 2 is refused by the parser instead of failing deep inside.
OPTION_RANGES = {
    "max_new_tokens": _ranged(int, 1),
    "temperature": _ranged(float, 0.0),
    "top_fraction": _ranged(float, 0.0, 1.0, low_open=True),
    "batch_size": _ranged(int, 1),
    "nproc": _ranged(int, 1),
    "show": _ranged(int, 0),
}


class Parser(argparse.ArgumentParser):
    """argparse with strop's one error line: `strop: error: train: ...`, exit 2."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        command = self.prog.removeprefix("strop").strip()
        self.exit(2, f"strop: error: {command + ': ' if command else ''}{message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="strop", description="Fine-tune, align, merge and export LLMs.")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    for sub in subparsers.choices.values():
        _finish_subparser(sub)
    return parser


def _finish_subparser(sub: argparse.ArgumentParser) -> None:
    """`--debug` after the command (`strop train x.yml --debug`) and range checks, down nested commands."""
    sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    for action in sub._actions:
        if action.dest in OPTION_RANGES:
            action.type = OPTION_RANGES[action.dest]
        if isinstance(action, argparse._SubParsersAction):
            for nested in action.choices.values():
                _finish_subparser(nested)


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def report_crash(err: BaseException) -> None:
    """A failure strop did not foresee: the traceback, then what to send so that it can be fixed (the
    versions come from package metadata, so that a broken torch install cannot break the report)."""
    import platform

    from strop import __version__

    traceback.print_exception(err, file=sys.stderr)
    print(
        f"strop: internal error: {type(err).__name__}: {err}\n"
        "This is a bug in strop, not a mistake in your input. Please report it to the strop maintainers "
        "with the command you ran, the traceback above and these versions: "
        f"strop {__version__}, Python {platform.python_version()}, torch {_version('torch')}, "
        f"transformers {_version('transformers')}, peft {_version('peft')}.",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("STROP_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except StropError as err:
        if debug:
            traceback.print_exception(err, file=sys.stderr)
        print(f"strop: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("strop: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the one place an unforeseen failure is reported
        report_crash(err)
        return 1


def entry() -> None:
    """The `strop` executable (and `python -m strop`). A rank started by torchrun flushes its output and
    leaves without interpreter finalization: FSDP2's DTensor collectives keep the gloo process group alive
    after destroy_process_group (its worker and transport threads were still running when `train`
    returned), and a rank finalizing beside them was seen to abort (SIGABRT, "terminate called without an
    active exception"), which makes torchrun kill the other ranks of a run that had finished."""
    status = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    entry()
