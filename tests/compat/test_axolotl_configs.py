"""Axolotl's own example configs (configs/README.md) validate as written and train one step."""

from __future__ import annotations

import json

import pytest
import yaml
from axolotl_fixtures import CONFIG_NAMES, CONFIGS, localize

from strop.config import load_config
from strop.errors import StropError


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_validates_as_written(name, tmp_path, family_models, capsys):
    cfg, _ = load_config(localize(name, tmp_path, family_models))
    assert cfg.max_steps == 1
    for line in capsys.readouterr().err.splitlines():
        assert line.startswith(("strop: ignored: ", "strop: axolotl: ")), line


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_trains_one_step(name, tmp_path, family_models):
    import strop

    if yaml.safe_load((CONFIGS / name).read_text()).get("optimizer") in ("adamw_torch_8bit", "adamw_torch_4bit"):
        pytest.importorskip("torchao", reason="its optimizer is torchao's (pip install --no-deps torchao)")
    result = strop.train(localize(name, tmp_path, family_models, short_rollouts=True))
    assert result.output_dir.is_dir()
    logged = [json.loads(line) for line in (result.output_dir / "metrics.jsonl").read_text().splitlines()]
    assert logged and logged[-1]["step"] == 1


def test_unknown_key_is_still_refused(tmp_path, family_models):
    path = localize("llama-3--lora-1b.yml", tmp_path, family_models)
    path.write_text(path.read_text() + "lora_rnk: 8\n")
    with pytest.raises(StropError, match=r"unknown key 'lora_rnk'; did you mean 'lora_r'"):
        load_config(path)
