"""What a training run may do to its output folder: --overwrite removes only what strop wrote, resumed
logs are cut back to the checkpoint and survive a torn last line, a full disk is one clear line."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from strop import manifest
from strop.cli import main
from strop.config import load_config
from strop.errors import StropError
from strop.train import checkpoint as ckpt
from strop.train import loop
from strop.train.output_dir import cut_log, prepare_output


@pytest.fixture(autouse=True)
def no_plot(monkeypatch):
    monkeypatch.setattr(loop, "plot_losses", lambda *a, **k: None)


def test_overwrite_never_deletes_the_config_data_or_notes_of_the_folder(make_config, tmp_path, capsys):
    """Issue #24, item 1: output_dir is the folder that holds the config, the data and a notes file."""
    config = make_config(max_steps=1, output_dir=str(tmp_path))  # writes config.yml and data.jsonl there
    (tmp_path / "notes.txt").write_text("my notes\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(before) == ["config.yml", "data.jsonl", "notes.txt"]
    assert main(["train", str(config), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "strop did not write (config.yml, data.jsonl, notes.txt)" in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_overwrite_removes_exactly_what_the_earlier_run_wrote(make_config, tmp_path):
    cfg, base = load_config(make_config(max_steps=2, save_steps=1))
    out = loop.train(cfg, base)
    written = set(manifest.read(out))
    assert {"checkpoint-1", "checkpoint-2", "metrics.jsonl", "adapter_model.safetensors"} <= written
    (out / "notes.txt").write_text("mine")
    with pytest.raises(StropError, match=r"strop did not write \(notes.txt\)"):
        loop.train(cfg, base, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "checkpoint-2").is_dir()
    (out / "notes.txt").unlink()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    shutil.rmtree(out / "checkpoint-2")  # strop's name, now a link to a folder strop did not write
    (out / "checkpoint-2").symlink_to(outside, target_is_directory=True)
    loop.train(cfg.model_copy(update={"save_steps": None}), base, overwrite=True)
    assert (outside / "keep.txt").read_text() == "keep"  # the link went, never what it pointed at
    assert not (out / "checkpoint-1").exists() and not (out / "checkpoint-2").exists()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_overwrite_refuses_a_folder_holding_this_runs_inputs(make_config, capsys):
    cfg, base = load_config(make_config(max_steps=1))
    out = loop.train(cfg, base)
    inputs = [("the dataset", out / "metrics.jsonl")]  # a dataset that lives in the earlier run's folder
    with pytest.raises(StropError, match="holds the dataset"):
        prepare_output(out, resume=False, overwrite=True, inputs=inputs)
    assert main(["train", str(out / "strop_config.yml"), "--overwrite"]) == 2  # the saved config, rerun
    assert "holds the config in" in capsys.readouterr().err
    assert (out / "strop_config.yml").is_file() and (out / "metrics.jsonl").is_file()


def test_output_dir_that_is_a_file_or_another_runs_folder(make_config, tmp_path):
    target = tmp_path / "a_file"
    target.write_text("not a folder")
    cfg, base = load_config(make_config(max_steps=1, output_dir=str(target)))
    with pytest.raises(StropError, match="is a file"):
        loop.train(cfg, base, overwrite=True)
    with pytest.raises(StropError, match=r"cannot be created: .*a_file is a file"):
        prepare_output(target / "run", resume=False, overwrite=False, inputs=[])
    assert target.read_text() == "not a folder"
    cfg, base = load_config(make_config(max_steps=1, save_steps=1))
    loop.train(cfg, base)
    with pytest.raises(StropError, match="holds an earlier run: use --resume"):
        loop.train(cfg, base)
    other, _ = load_config(make_config(max_steps=2, adapter="full"))
    with pytest.raises(StropError, match="written by another run"):
        loop.train(other, base, resume=True)


def test_an_empty_folder_the_user_made_is_used_and_kept(make_config, tmp_path):
    (tmp_path / "empty").mkdir()
    cfg, base = load_config(make_config(max_steps=1, output_dir=str(tmp_path / "empty")))
    loop.train(cfg, base)
    loop.train(cfg, base, overwrite=True)
    assert (tmp_path / "empty" / "adapter_model.safetensors").is_file()


def test_resume_drops_a_torn_last_metrics_line_with_a_note(make_config, capsys):
    """Issue #24, item 2: a full disk or a power cut leaves half a JSON line in metrics.jsonl."""
    cfg, base = load_config(make_config(max_steps=2, save_steps=1))
    out = loop.train(cfg, base)
    (out / "checkpoint-2").rename(out / "checkpoint-2.tmp")  # as if killed before checkpoint 2 was committed
    with (out / "metrics.jsonl").open("a") as log:
        log.write('{"step": 3, "loss": 1.2')
    loop.train(cfg.model_copy(update={"max_steps": 3, "save_steps": None}), base, resume=True)
    assert "dropped 1 unreadable line" in capsys.readouterr().out
    assert not (out / "checkpoint-2.tmp").exists()  # the killed run's half checkpoint is gone
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_cut_log_keeps_earlier_records_byte_for_byte(tmp_path, capsys):
    log = tmp_path / "completions.jsonl"
    lines = ['{"step": 0, "text": "caf\\u00e9"}', '{"step": 1}', "[1, 2]", '{"step": 2}', '{"step": 1, "te']
    log.write_text("\n".join(lines))
    cut_log(log, 2)
    assert log.read_text() == lines[0] + "\n" + lines[1] + "\n"
    assert "dropped 2 unreadable line(s) (3, 5)" in capsys.readouterr().out
    cut_log(tmp_path / "absent.jsonl", 0)
    assert not (tmp_path / "absent.jsonl").exists()


def test_resumed_grpo_run_logs_each_steps_rollouts_once(make_config, tmp_path):
    """Issue #24, item 3: completions.jsonl is cut back to the resumed step too."""
    (tmp_path / "rewards.py").write_text(
        "def r(prompts, completions, rows):\n    return [float(len(c)) for c in completions]\n"
    )
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {i}"}) + "\n" for i in range(8)))
    keys = {
        "rl": "grpo",
        "rewards": [{"type": "function", "function": "rewards.py:r"}],
        "num_generations": 2,
        "max_completion_length": 4,
        "micro_batch_size": 2,
        "max_steps": 2,
        "save_steps": 1,
        "sequence_len": 64,
        "datasets": [{"path": str(data), "type": "prompt"}],
    }
    cfg, base = load_config(make_config(**keys))
    out = loop.train(cfg, base)
    (out / "checkpoint-2").rename(out / "gone")  # killed after step 1's rollouts, before its checkpoint
    with (out / "completions.jsonl").open("a") as log:
        log.write('{"step": 2, "prompt": "Say')  # and a torn line, as a kill mid-write leaves
    loop.train(cfg.model_copy(update={"max_steps": 3}), base, resume=True)
    steps = [json.loads(line)["step"] for line in (out / "completions.jsonl").read_text().splitlines()]
    assert steps == [0] * 4 + [1] * 4 + [2] * 4


def _enospc_on(name: str, step: str):
    real = ckpt.save_file

    def save_file(tensors, path, *args, **kwargs):
        if Path(path).name == name and Path(path).parent.name == step:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path, *args, **kwargs)

    return save_file


@pytest.mark.slow
def test_full_disk_during_a_checkpoint_is_one_line_and_resume_finishes_the_run(
    make_config, tmp_path, monkeypatch, capsys
):
    """Issue #24, item 4: the previous checkpoint stays intact; after space is freed --resume ends with
    the weights of a run that never failed."""
    config = make_config(max_steps=6, save_steps=2, save_total_limit=2, output_dir=str(tmp_path / "whole"))
    cfg, base = load_config(config)
    expected = load_file(loop.train(cfg, base) / "adapter_model.safetensors")
    cfg = cfg.model_copy(update={"output_dir": str(tmp_path / "full")})
    monkeypatch.setattr(ckpt, "save_file", _enospc_on("optimizer.safetensors", "checkpoint-4.tmp"))
    assert main(["train", str(config), "--output-dir", str(tmp_path / "full")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("strop: error: no space left on the device writing ")
    assert "checkpoint-4.tmp/optimizer.safetensors" in err and " free of " in err and "needed" in err
    assert "checkpoint-2 is intact" in err
    out = tmp_path / "full"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-2"]
    monkeypatch.undo()
    loop.train(cfg, base, resume=True)
    got = load_file(out / "adapter_model.safetensors")
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_full_disk_during_the_final_save(make_config, monkeypatch):
    from peft import PeftModel

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    cfg, base = load_config(make_config(max_steps=2, save_steps=2))
    monkeypatch.setattr(PeftModel, "save_pretrained", full)
    with pytest.raises(StropError, match=r"no space left on the device writing .*checkpoint-2 is intact"):
        loop.train(cfg, base)
    out = Path(cfg.output_dir)
    assert not (out / "adapter_model.safetensors").exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".final")] == []
    monkeypatch.undo()
    loop.train(cfg, base, resume=True)
    assert (out / "adapter_model.safetensors").is_file()


def test_permission_error_names_the_file(make_config, monkeypatch):
    real_open = Path.open

    def denied(self, mode="r", *args, **kwargs):
        if self.name == "metrics.jsonl" and "a" in mode:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", denied)
    cfg, base = load_config(make_config(max_steps=1))
    with pytest.raises(StropError, match=r"cannot write .*metrics.jsonl: permission denied"):
        loop.train(cfg, base)


def test_a_link_planted_at_the_checkpoint_temp_name_is_never_followed(make_config, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoint-1.tmp").symlink_to(victim, target_is_directory=True)  # where a killed run's was
    manifest.start(out, ["checkpoint-1.tmp"])
    cfg, base = load_config(make_config(max_steps=1, save_steps=1))
    loop.train(cfg, base, resume=True)
    assert list(victim.iterdir()) == [] and (out / "checkpoint-1" / "trainable.safetensors").is_file()


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


@pytest.mark.slow
def test_a_real_full_disk_on_a_small_tmpfs(make_config, tmp_path, monkeypatch):
    """The same as the monkeypatched test, on a real file system that fills up after checkpoint-2
    (needs root and permission to mount; skipped otherwise)."""
    disk = tmp_path / "disk"
    if os.geteuid() != 0 or not _mount_tmpfs(disk, "4m"):
        pytest.skip("mounting a tmpfs needs root and CAP_SYS_ADMIN")
    try:
        real_commit = ckpt._commit

        def commit_then_fill(tmp, final, keep):
            real_commit(tmp, final, keep)
            if final.name == "checkpoint-2":
                with open(disk / "ballast", "wb") as ballast:
                    try:
                        while True:
                            ballast.write(b"\0" * 65536)
                    except OSError:
                        pass

        monkeypatch.setattr(ckpt, "_commit", commit_then_fill)
        cfg, base = load_config(make_config(max_steps=4, save_steps=2, output_dir=str(disk / "run")))
        with pytest.raises(
            StropError,
            match=r"^no space left on the device writing .*: \d+ B free of 4.0 MiB, about "
            r".* needed; checkpoint-2 is intact",
        ):
            loop.train(cfg, base)
        assert (disk / "run" / "checkpoint-2" / "trainer_state.json").is_file()
        (disk / "ballast").unlink()
        monkeypatch.undo()
        loop.train(cfg, base, resume=True)
        assert (disk / "run" / "adapter_model.safetensors").is_file()
    finally:
        subprocess.run(["umount", str(disk)], check=True)
