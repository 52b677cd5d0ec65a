"""What the code sandbox costs per program: the median wall time of a trivial program run through
`strop.rl.sandbox`, next to the bare interpreter starting and exiting, and optionally next to another
version of the sandbox module (the single-file one of an older checkout). Prints a table; not a test.

    PYTHONPATH=src python bench/sandbox_overhead.py [--before OLD/src/strop/rl/sandbox.py] [RUNS]

Rows: `python -I -B -c pass` started with subprocess (the floor any process-based sandbox pays), then
`run_tests` of a one-line solution with one test through each sandbox. The rows take turns, round after
round, so a machine shared with other work slows them alike; each after a warm-up run (one-time probes
are not counted). Medians of RUNS rounds (default 40).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time

from strop.rl import sandbox

SOLUTION, TESTS = "def f():\n    return 1\n", ["assert f() == 1"]


def load(path: str):
    spec = importlib.util.spec_from_file_location("sandbox_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="?", type=int, default=40)
    parser.add_argument("--before", help="an older sandbox module to time alongside")
    args = parser.parse_args()
    rows = {"bare interpreter": lambda: subprocess.run([sys.executable, "-I", "-B", "-c", "pass"], check=True)}
    if args.before:
        before = load(args.before)
        rows["sandbox before"] = lambda: before.run_tests(SOLUTION, TESTS)
    rows["sandbox (this checkout)"] = lambda: sandbox.run_tests(SOLUTION, TESTS)
    times: dict[str, list[float]] = {name: [] for name in rows}
    for fn in rows.values():
        fn()
    for _ in range(args.runs):
        for name, fn in rows.items():
            started = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - started) * 1000)
    print(f"median of {args.runs} rounds; layers here: {sandbox.missing_layers() or 'all'}")
    for name, values in times.items():
        print(f"{name:<24} {statistics.median(values):8.1f} ms")


if __name__ == "__main__":
    main()
