"""`strop merge --overwrite` replaces only a folder strop wrote, and a killed merge's hidden temporary
folder is removed by the next merge (issue #24, items 1 and 5, for model merging)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from merge_helpers import write_config

from strop import manifest
from strop.errors import StropError
from strop.merge import run_merge


def _merge(tmp_path, models, out, **kwargs):
    config = {"merge_method": "linear", "models": [{"model": models["a"]}, {"model": models["b"]}]}
    return run_merge(write_config(tmp_path, config), out, progress=False, **kwargs)


def test_overwrite_replaces_a_merge_but_never_a_folder_strop_did_not_write(tmp_path, models):
    out = _merge(tmp_path, models, tmp_path / "out")
    assert manifest.foreign(out) == [] and "model.safetensors" in manifest.read(out)
    _merge(tmp_path, models, out, overwrite=True)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(StropError, match=r"strop did not write \(notes.txt\)"):
        _merge(tmp_path, models, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "model.safetensors").is_file()
    a_file = tmp_path / "a_file"
    a_file.write_text("keep")
    with pytest.raises(StropError, match="is a file"):
        _merge(tmp_path, models, a_file, overwrite=True)
    assert a_file.read_text() == "keep"


def test_a_killed_merges_hidden_folder_is_removed_by_the_next_merge(tmp_path, models):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    leftover = tmp_path / f".out.tmp-{child.pid}"  # what a SIGKILLed `strop merge` leaves
    leftover.mkdir()
    (leftover / "model-00001-of-00002.safetensors").write_bytes(b"\0" * 4096)
    _merge(tmp_path, models, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
