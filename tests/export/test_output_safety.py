"""merge-lora and export never write through a link planted at a temporary name, and a killed merge's
leftover folder is removed by the next merge (issue #24, items 5 and 6). On the tiny byte-level model
of tests/conftest.py, so these run without SmolLM2."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from strop import manifest
from strop.errors import StropError
from strop.export.bundle import export_model
from strop.export.merge_lora import merge_lora


@pytest.fixture(scope="module")
def adapter(tiny_model: Path, tmp_path_factory) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("adapter")
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"])).save_pretrained(str(folder))
    return folder


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_export_never_writes_through_links_at_its_temporary_names(tiny_model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victims = []
    for name in ("tiny.gguf.tmp", "tiny.gguf.f16.tmp", "Modelfile.tmp", "Modelfile"):
        victim = tmp_path / f"victim-{name}"
        victim.write_text("precious")
        (out / name).symlink_to(victim)
        victims.append(victim)
    result, modelfile = export_model(tiny_model, "f16", out / "tiny.gguf")
    assert [v.read_text() for v in victims] == ["precious"] * len(victims)
    assert not result.path.is_symlink() and result.path.read_bytes()[:4] == b"GGUF"
    assert not modelfile.is_symlink() and "FROM ./tiny.gguf" in modelfile.read_text()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_merge_lora_never_writes_through_a_link_at_its_old_temporary_name(tiny_model, adapter, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / f".merged.tmp-{os.getpid()}").symlink_to(victim, target_is_directory=True)
    out = merge_lora(tiny_model, adapter, tmp_path / "merged")
    assert list(victim.iterdir()) == []
    assert (out / "model.safetensors").is_file() and not out.is_symlink()
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~_umask())  # not the 0700 of the temp folder


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_killed_merges_leftover_is_removed_by_the_next_merge(tiny_model, adapter, tmp_path):
    leftover = tmp_path / f".merged.tmp-{dead_pid()}"  # what a SIGKILLed `strop merge-lora` leaves
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"\0" * (1 << 20))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".merged.tmp-{sleeper.pid}-abc123"  # a concurrent merge's: left alone
        live.mkdir()
        locked = tmp_path / f".merged.tmp-{dead_pid()}-xyz789"  # pid gone, folder still locked: left alone
        locked.mkdir()
        fd = os.open(locked, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            merge_lora(tiny_model, adapter, tmp_path / "merged")
            assert not leftover.exists() and live.is_dir() and locked.is_dir()
        finally:
            os.close(fd)
        merge_lora(tiny_model, adapter, tmp_path / "merged")  # once unlocked, the next merge sweeps it
        assert not locked.exists() and live.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_failed_merge_leaves_no_temporary_folder(tiny_model, adapter, tmp_path, monkeypatch):
    from transformers import PreTrainedTokenizerFast

    def boom(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(PreTrainedTokenizerFast, "save_pretrained", boom)
    with pytest.raises(RuntimeError, match="interrupted"):
        merge_lora(tiny_model, adapter, tmp_path / "merged")
    assert list(tmp_path.iterdir()) == []


def test_merge_lora_replaces_its_own_output_but_never_a_users_folder(tiny_model, adapter, tmp_path):
    out = merge_lora(tiny_model, adapter, tmp_path / "merged")
    assert manifest.foreign(out) == []
    merge_lora(tiny_model, adapter, out)  # a re-merge replaces what strop wrote
    (out / "notes.txt").write_text("mine")
    with pytest.raises(StropError, match=r"strop did not write \(notes.txt\)"):
        merge_lora(tiny_model, adapter, out)
    assert (out / "notes.txt").read_text() == "mine"
    with pytest.raises(StropError, match="strop did not write"):
        merge_lora(tiny_model, adapter, tiny_model)  # --out pointing at the base model itself
    assert (tiny_model / "model.safetensors").is_file()


def test_merge_lora_into_a_training_folder_is_claimed_there(tiny_model, adapter, tmp_path):
    run = tmp_path / "run"
    manifest.start(run, ["adapter_model.safetensors"])
    merge_lora(tiny_model, adapter, run / "merged")
    assert "merged" in manifest.read(run) and manifest.foreign(run) == []
