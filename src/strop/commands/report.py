"""`strop report RUN_DIR...`: one page comparing training runs: config differences, loss/reward and
evaluator curves, eval tables, forgetting, speed and memory, sample generations side by side. Writes a
self-contained HTML file and a markdown twin."""

from __future__ import annotations

import argparse

from strop.evaluation.report import write_report


def _run(args: argparse.Namespace) -> int:
    html, md = write_report(args.runs, args.out, args.title)
    print(f"strop report: {html} and {md}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="compare training runs in one HTML page (and markdown)")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="training output folders")
    parser.add_argument("--out", default="report.html", help="HTML file to write; the .md goes beside it")
    parser.add_argument("--title", default="strop report")
    parser.set_defaults(func=_run)
