"""Axolotl's own example configs (configs/README.md) pass `strop train --dry-run` as written and train one
step on strop's default model (SmolLM2-135M-Instruct) on the CPU."""

from __future__ import annotations

import json

import pytest
import yaml
from axolotl_fixtures import CONFIG_NAMES, CONFIGS, localize

from strop.cli import main
from strop.config import load_config
from strop.errors import StropError


def _only_notes(err: str) -> None:
    """Everything strop said about the config is an ignored key or an Axolotl note, never a warning."""
    for line in err.splitlines():
        if line.startswith("strop: "):
            assert line.startswith(("strop: ignored: ", "strop: axolotl: ", "strop: note: ")), line


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_validates_as_written(name, tmp_path, smollm2_dir, capsys):
    written = yaml.safe_load((CONFIGS / name).read_text())
    cfg, _ = load_config(localize(name, tmp_path, smollm2_dir, max_steps=None))
    assert cfg.max_steps == written.get("max_steps")
    _only_notes(capsys.readouterr().err)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_dry_runs_and_trains_one_step(name, tmp_path, smollm2_dir, capsys):
    import strop

    if yaml.safe_load((CONFIGS / name).read_text()).get("optimizer") in ("adamw_torch_8bit", "adamw_torch_4bit"):
        pytest.importorskip("torchao", reason="its optimizer is torchao's (pip install --no-deps torchao)")
    written = localize(name, tmp_path / "written", smollm2_dir, max_steps=None)
    assert main(["train", str(written), "--dry-run"]) == 0, capsys.readouterr().err
    _only_notes(capsys.readouterr().err)
    result = strop.train(localize(name, tmp_path, smollm2_dir))
    logged = [json.loads(line) for line in (result.output_dir / "metrics.jsonl").read_text().splitlines()]
    assert logged and logged[-1]["step"] == 1


def test_unknown_key_is_still_refused(tmp_path, smollm2_dir):
    path = localize("llama-3--lora-1b.yml", tmp_path, smollm2_dir)
    path.write_text(path.read_text() + "lora_rnk: 8\n")
    with pytest.raises(StropError, match=r"unknown key 'lora_rnk'; did you mean 'lora_r'"):
        load_config(path)
