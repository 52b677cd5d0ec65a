"""strop/safe_io.py: private temporary folders, the sweep of a dead process's leftovers, and disk
errors in one line."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import subprocess
import sys

import pytest
from safetensors import SafetensorError

from strop.errors import StropError
from strop.safe_io import TEMP_NAME, disk_errors, staged_file, sweep_stale, temp_folder, write_text


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temp_folder_is_private_unguessable_locked_and_removed_on_failure(tmp_path):
    target = tmp_path / "model.gguf"
    with pytest.raises(RuntimeError):
        with temp_folder(target) as folder:
            assert folder.parent == tmp_path and TEMP_NAME.match(folder.name).group("target") == "model.gguf"
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700
            fd = os.open(folder, os.O_RDONLY)
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held while the folder is in use
            os.close(fd)
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_staged_write_replaces_a_link_at_the_target_instead_of_writing_through_it(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "out.txt").symlink_to(victim)
    write_text(tmp_path / "out.txt", "new")
    assert victim.read_text() == "precious" and (tmp_path / "out.txt").read_text() == "new"
    assert not (tmp_path / "out.txt").is_symlink()


def test_sweep_removes_only_what_dead_processes_left(tmp_path, capsys):
    target = tmp_path / "merged"
    dead = tmp_path / f".merged.tmp-{dead_pid()}-a1"
    legacy = tmp_path / f".merged.tmp-{dead_pid()}"
    mine = tmp_path / f".merged.tmp-{os.getpid()}-b2"
    other_target = tmp_path / f".other.tmp-{dead_pid()}"
    outside = tmp_path / "outside"
    for folder in (dead, legacy, mine, other_target, outside):
        folder.mkdir()
    (outside / "keep").write_text("keep")
    link = tmp_path / f".merged.tmp-{dead_pid()}-c3"
    link.symlink_to(outside, target_is_directory=True)
    assert sorted(p.name for p in sweep_stale(target)) == sorted([dead.name, legacy.name, link.name])
    assert mine.is_dir() and other_target.is_dir() and (outside / "keep").read_text() == "keep"
    assert "removed 3 leftover" in capsys.readouterr().out
    with staged_file(target) as path:
        path.write_text("x")
    assert target.read_text() == "x"


def test_disk_errors_name_the_innermost_file_and_add_what_outer_blocks_know(tmp_path):
    with pytest.raises(StropError) as caught:
        with disk_errors(tmp_path, needed=3 * 2**20, intact="checkpoint-2 is intact"):
            with disk_errors(tmp_path / "optimizer.safetensors"):
                raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    message = str(caught.value)
    assert message.startswith(f"no space left on the device writing {tmp_path / 'optimizer.safetensors'}: ")
    assert " free of " in message and "about 3.0 MiB needed; checkpoint-2 is intact" in message
    with pytest.raises(StropError, match="read-only"):
        with disk_errors(tmp_path / "x"):
            raise OSError(errno.EROFS, "Read-only file system")
    with pytest.raises(OSError, match="No such file"):  # not a disk or permission error: unchanged
        with disk_errors(tmp_path / "x"):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
