"""Bad input through the real command line: a clear message naming file, line and field, exit 2, and no
output folder left behind that could pass for a finished run."""

import re

import pytest
import yaml

from strop.cli import main


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.err + captured.out


@pytest.mark.parametrize(
    "content,message",
    [
        ('{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": \n', r"data.jsonl:2: malformed JSON"),
        ('{"instruction": "a"}\n', r"data.jsonl:1: missing field 'output'"),
        ('{"instruction": "a", "output": ["b"]}\n', r"data.jsonl:1: field 'output' must be a string, got list"),
        ("", r"dataset .*data.jsonl is empty"),
    ],
)
def test_bad_dataset(capsys, make_config, tmp_path, content, message):
    config = make_config()
    (tmp_path / "data.jsonl").write_text(content)
    code, out = run_cli(capsys, "train", str(config))
    assert code == 2
    assert re.search(message, out), out
    assert not (tmp_path / "out").exists()


def test_missing_dataset_file(capsys, make_config, tmp_path):
    config = make_config()
    (tmp_path / "data.jsonl").unlink()
    code, out = run_cli(capsys, "train", str(config))
    assert code == 2 and "dataset file not found" in out


def test_unknown_key_and_missing_config(capsys, make_config, tmp_path):
    config = make_config(learning_rat=1e-3)
    code, out = run_cli(capsys, "train", str(config))
    assert code == 2 and "unknown key 'learning_rat'; did you mean 'learning_rate'" in out
    code, out = run_cli(capsys, "train", str(tmp_path / "nope.yml"))
    assert code == 2 and "config file not found" in out


def test_overlong_examples_error_drop_truncate(capsys, make_config, tmp_path):
    rows = [{"instruction": "a", "output": "b"}] * 3 + [{"instruction": "word " * 200, "output": "b"}]
    code, out = run_cli(capsys, "train", str(make_config(rows, excess_length_strategy="error")))
    assert code == 2 and "data.jsonl:4:" in out and "over sequence_len=128" in out
    code, out = run_cli(capsys, "train", str(make_config(rows)), "--dry-run")
    assert code == 0 and "dropped 1 of 4 examples longer than sequence_len=128" in out
    code, out = run_cli(capsys, "train", str(make_config(rows, excess_length_strategy="truncate")), "--dry-run")
    assert code == 0 and "truncated 1 of 4" in out


def test_all_rows_too_long_is_an_error(capsys, make_config):
    rows = [{"instruction": "word " * 200, "output": "b"}]
    code, out = run_cli(capsys, "train", str(make_config(rows)))
    assert code == 2 and "no training examples left" in out


def test_dry_run_prints_plan_and_writes_nothing(capsys, make_config, tmp_path):
    code, out = run_cli(capsys, "train", str(make_config()), "--dry-run", "--set", "lora_r=2")
    assert code == 0
    assert "trainable parameters" in out and "steps" in out
    assert not (tmp_path / "out").exists()


def test_train_then_chat_one_shot(capsys, make_config, tmp_path):
    code, _ = run_cli(capsys, "train", str(make_config(max_steps=1)), "--output-dir", str(tmp_path / "run"))
    assert code == 0 and (tmp_path / "run" / "adapter_model.safetensors").is_file()
    code, out = run_cli(capsys, "chat", str(tmp_path / "run"), "--prompt", "hello", "--max-new-tokens", "4")
    assert code == 0 and out.strip()


def test_config_command_prints_resolved_yaml(capsys, make_config):
    code, out = run_cli(capsys, "config", str(make_config()))
    assert code == 0 and yaml.safe_load(out)["lora_r"] == 4
