"""The one error path itself: the real exit status of the installed command (a few subprocesses),
`--debug`, the report of an unforeseen crash, and the warnings that replace silent acceptance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bad_input_world import looks_complete

import strop
from strop.cli import main

SRC = str(Path(strop.__file__).resolve().parents[1])


def strop_process(*args: str, code: str | None = None, **env: str) -> subprocess.CompletedProcess:
    """`python -m strop ARGS` (or `python -c CODE`) from this source tree, as a user would run it."""
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "strop", *args]
    environment = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)


def bad_data_config(world) -> str:
    return world.data_config("data.jsonl", world.rows(4) + ["not an object"])


@pytest.mark.slow
def test_real_exit_status_is_2_with_one_line_and_no_traceback(world):
    done = strop_process("train", bad_data_config(world))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.strip().splitlines()[-1].startswith("strop: error: ")
    assert "data.jsonl:5: each line must be a JSON object, got str" in done.stderr
    assert not world.out.exists()


@pytest.mark.slow
def test_debug_flag_adds_the_traceback_in_a_real_process(world):
    done = strop_process("train", bad_data_config(world), "--debug")
    assert done.returncode == 2
    assert "Traceback (most recent call last)" in done.stderr and "StropError" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("strop: error: ")


@pytest.mark.slow
def test_unforeseen_crash_keeps_its_traceback_and_says_how_to_report(world):
    crash = (
        "import sys, strop.train.loop as loop\n"
        "def broken(*args, **kwargs):\n    return {}['missing']\n"
        "loop.train = broken\n"
        "from strop.cli import main\n"
        f"sys.exit(main(['train', {world.config()!r}]))\n"
    )
    done = strop_process(code=crash)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr and "KeyError: 'missing'" in done.stderr
    assert "strop: internal error: KeyError" in done.stderr
    assert "This is a bug in strop" in done.stderr and f"strop {strop.__version__}" in done.stderr
    assert "strop: error:" not in done.stderr


def test_debug_flag_before_or_after_the_command_and_from_the_environment(world, capsys, monkeypatch):
    config = bad_data_config(world)
    for argv, env in (
        (["--debug", "train", config], None),
        (["train", config, "--debug"], None),
        (["train", config], "1"),
    ):
        if env:
            monkeypatch.setenv("STROP_DEBUG", env)
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" in err and err.strip().splitlines()[-1].startswith("strop: error: ")
    monkeypatch.setenv("STROP_DEBUG", "0")
    assert main(["train", config]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_crash_in_process_returns_1_with_traceback(world, capsys, monkeypatch):
    import strop.train.loop as loop

    monkeypatch.setattr(loop, "train", lambda *a, **k: 1 / 0)
    assert main(["train", world.config()]) == 1
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err and "Traceback" in err and "please report it" in err.lower()


def test_reward_failing_on_some_rows_is_said_once_and_the_run_finishes(world, capsys):
    world.file(
        "picky.py", "def picky(prompts, completions, rows):\n    return [1.0 / (row['n'] % 2) for row in rows]\n"
    )
    rows = [{"prompt": f"Say {i}", "n": i} for i in range(4)]
    assert main(["train", world.rl_config("picky.py:picky", rows=rows)]) == 0
    err = capsys.readouterr().err
    warnings = [
        line for line in err.splitlines() if line.startswith("strop: warning: function reward 'picky.py:picky'")
    ]
    assert len(warnings) == 1, err
    assert "raised ZeroDivisionError: float division by zero (at picky.py:2)" in warnings[0]
    assert looks_complete(world.out)


def test_summary_repeats_how_many_rows_were_dropped(world, capsys):
    rows = world.rows(8) + [{"instruction": "word " * 200, "output": "b"}]
    assert main(["train", world.data_config("data.jsonl", rows)]) == 0
    out = capsys.readouterr().out
    summary = out[out.index("done.") :]
    assert "dropped 1 of 9 examples longer than sequence_len=128" in summary


def test_validation_share_that_rounds_to_nothing_is_a_note(world, capsys):
    assert main(["train", world.config(val_set_size=0.01), "--dry-run"]) == 0
    assert "val_set_size=0.01 of 16 examples rounds to 0: no validation" in capsys.readouterr().out


def test_jsonl_with_a_byte_order_mark_reads(world, capsys):
    body = "".join(json.dumps(row) + "\n" for row in world.rows(4))
    assert main(["train", world.data_config("data.jsonl", b"\xef\xbb\xbf" + body.encode()), "--dry-run"]) == 0
