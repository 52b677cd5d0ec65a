"""bench/vlm_speed.py's CPU smoke mode: both stacks train the same tiny Qwen2-VL on the same batch, so
their first losses agree; the table prints a row for each."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "vlm_speed.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("vlm_speed", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_rows_agree(bench):
    rows = [bench.run_one(stack, "tiny", 56, steps=1, warm=0) for stack in ("hf", "strop")]
    hf, strop = rows
    assert hf["tokens"] == strop["tokens"] == 4 * (1 + 4 + 1 + bench.TEXT)  # 56 px → 4 image tokens + boundaries
    assert strop["loss"] == pytest.approx(hf["loss"], abs=1e-5)
    assert hf["tokens_per_s"] > 0 and strop["tokens_per_s"] > 0
    text = bench.table(rows + [{"stack": "strop-nokernels", "image": 56, "error": "boom"}])
    assert "| 56 | strop | 1048 |" in text and "failed: boom" in text
