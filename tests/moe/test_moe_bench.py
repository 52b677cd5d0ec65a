"""bench/moe_speed.py's CPU smoke mode runs every row (the GPU figures come from the H200)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest


@pytest.mark.slow
def test_smoke_mode_measures_every_row():
    path = Path(__file__).resolve().parents[2] / "bench" / "moe_speed.py"
    spec = importlib.util.spec_from_file_location("moe_speed", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(["--smoke"])
    assert len(rows) == 2 * 3 * 2
    assert all(math.isfinite(rate) and rate > 0 for *_, rate, _ in rows), rows
