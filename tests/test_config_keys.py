import pytest
import yaml

from strop.cli import main
from strop.config import Config, load_config, schema_rows
from strop.errors import StropError


def write(tmp_path, data) -> str:
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


BASE = {"datasets": [{"path": "d.jsonl", "type": "alpaca"}]}


def test_defaults_and_yaml_float_strings(tmp_path):
    cfg, _ = load_config(write(tmp_path, {**BASE, "learning_rate": "2e-4"}))
    assert cfg.learning_rate == pytest.approx(2e-4)
    assert cfg.strategy == "full"
    assert cfg.base_model == "smollm2-135m-instruct"


def test_unknown_key_names_closest(tmp_path):
    with pytest.raises(StropError, match=r"unknown key 'lora_rank'.*did you mean 'lora_r'"):
        load_config(write(tmp_path, {**BASE, "lora_rank": 8}))


def test_future_key_is_refused_with_reason(tmp_path):
    with pytest.raises(StropError, match=r"deepspeed: 'zero3.json' is not supported: strop shards with FSDP2"):
        load_config(write(tmp_path, {**BASE, "deepspeed": "zero3.json"}))
    assert load_config(write(tmp_path, {**BASE, "deepspeed": None}))[0].strategy == "full"


def test_wrong_type_names_key(tmp_path):
    with pytest.raises(StropError, match=r"micro_batch_size"):
        load_config(write(tmp_path, {**BASE, "micro_batch_size": "many"}))


def test_dataset_entry_unknown_field(tmp_path):
    with pytest.raises(StropError, match=r"datasets\.0\.typo"):
        load_config(write(tmp_path, {"datasets": [{"path": "d.jsonl", "type": "alpaca", "typo": 1}]}))


def test_overrides_are_yaml_typed(tmp_path):
    cfg, _ = load_config(write(tmp_path, BASE), ["lora_r=32", "adapter=lora", "sample_packing=true"])
    assert (cfg.lora_r, cfg.adapter, cfg.sample_packing) == (32, "lora", True)


def test_schema_lists_every_key(capsys):
    names = {row[0] for row in schema_rows()}
    assert set(Config.model_fields) <= names
    assert main(["config", "--schema"]) == 0
    assert "sequence_len" in capsys.readouterr().out


def test_survey_configs_load_unchanged():
    """The survey's two example configs validate as written (QLoRA + NEFTune SFT, and ORPO)."""
    from pathlib import Path

    survey = Path(__file__).resolve().parents[2] / "shared" / "survey"
    if not survey.exists():
        pytest.skip("shared/survey not beside the checkout")
    sft, _ = load_config(survey / "sft_config.yml")
    assert (sft.load_in_4bit, sft.neftune_noise_alpha, sft.learning_rate) == (True, 5, pytest.approx(2e-4))
    orpo, _ = load_config(survey / "orpo_config.yml")
    assert orpo.orpo_alpha == pytest.approx(0.1)
