"""strop/manifest.py: the record of what strop wrote into a folder, and removing exactly that."""

from __future__ import annotations

import pytest

from strop import manifest
from strop.errors import StropError
from strop.pipeline import fresh_stage_folder


def test_claims_are_kept_only_in_folders_strop_started(tmp_path):
    manifest.claim(tmp_path / "a.txt")
    assert manifest.read(tmp_path) is None and not (tmp_path / manifest.MANIFEST).exists()
    run = tmp_path / "run"
    manifest.start(run, ["metrics.jsonl"])
    manifest.claim(run / "checkpoint-1", run / "checkpoint-1.tmp")
    manifest.start(run, ["loss.png"])  # a resumed run adds to the earlier claims
    assert manifest.read(run) == ["metrics.jsonl", "checkpoint-1", "checkpoint-1.tmp", "loss.png"]
    (run / manifest.MANIFEST).write_text("{not json")
    assert manifest.read(run) is None and manifest.foreign(run) == []  # the manifest itself is never foreign


def test_remove_own_deletes_claimed_entries_and_links_but_never_their_targets(tmp_path):
    run, outside = tmp_path / "run", tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    manifest.start(run, ["checkpoint-1", "metrics.jsonl", "tensorboard"])
    (run / "checkpoint-1").mkdir()
    (run / "checkpoint-1" / "w").write_text("w")
    (run / "metrics.jsonl").symlink_to(outside / "keep")
    (run / "tensorboard").symlink_to(outside, target_is_directory=True)
    (run / "notes.txt").write_text("mine")
    assert manifest.foreign(run) == ["notes.txt"]
    with pytest.raises(StropError, match="notes.txt"):
        manifest.check_replaceable(run, "output folder")
    manifest.remove_own(run)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
    assert (outside / "keep").read_text() == "keep"


def test_a_pipeline_never_deletes_a_stage_folder_it_did_not_make(tmp_path):
    out = tmp_path / "pipeline"
    manifest.start(out)
    (out / "sft").mkdir()
    (out / "sft" / "mine.txt").write_text("mine")
    with pytest.raises(StropError, match="strop did not write it"):
        fresh_stage_folder(out, out / "sft")
    assert (out / "sft" / "mine.txt").is_file()
    fresh_stage_folder(out, out / "orpo")
    (out / "orpo" / "stage-output").write_text("x")
    fresh_stage_folder(out, out / "orpo")  # a re-run of its own stage empties it
    assert list((out / "orpo").iterdir()) == []
