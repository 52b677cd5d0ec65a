import json

import pytest
import yaml

from strop.errors import StropError
from strop.pipeline import run_pipeline


def write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def pipeline(tmp_path, tiny_model, make_config):
    make_config()  # writes data.jsonl and config.yml (the SFT stage's config)
    write(
        tmp_path / "grpo.yml",
        {
            "rl": "grpo",
            "datasets": [{"path": "data.jsonl", "type": "alpaca"}],
            "adapter": "lora",
            "rewards": [{"type": "match", "contains": True}],
            "num_generations": 2,
            "max_completion_length": 4,
            "max_steps": 1,
            "micro_batch_size": 2,
            "bf16": False,
        },
    )
    write(tmp_path / "future.yml", {"rl": "sppo", "datasets": [{"path": "data.jsonl", "type": "alpaca"}]})
    write(
        tmp_path / "soup.yml",
        {"merge_method": "linear", "models": [{"model": "{previous}"}, {"model": str(tiny_model)}]},
    )
    return write(
        tmp_path / "pipeline.yml",
        {
            "base_model": str(tiny_model),
            "output_dir": str(tmp_path / "pipe"),
            "sample_prompts": ["hello"],
            "sample_max_new_tokens": 3,
            "stages": [
                {"name": "sft", "kind": "train", "config": "config.yml", "set": {"max_steps": 2}},
                {"name": "grpo", "kind": "train", "config": "grpo.yml"},
                {"name": "future", "kind": "train", "config": "future.yml", "optional": True},
                {"name": "soup", "kind": "merge", "config": "soup.yml"},
            ],
        },
    )


def test_pipeline_chains_stages_skips_missing_objective_and_resumes(pipeline, tmp_path, capsys):
    report = run_pipeline(pipeline)
    out = tmp_path / "pipe"
    sft = json.loads((out / "sft" / "stage.json").read_text())
    assert (out / "sft" / "merged" / "model.safetensors").is_file() and sft["model"].endswith("merged")
    grpo = json.loads((out / "grpo" / "stage.json").read_text())
    assert "reward" in grpo["final"] and grpo["model"].endswith("merged")
    assert sft["merged"] != grpo["merged"] and "skipped" in json.loads((out / "future" / "stage.json").read_text())
    soup = json.loads((out / "soup" / "stage.json").read_text())
    assert (out / "soup" / "merged" / "config.json").is_file()
    assert grpo["merged"] in (out / "soup" / "merge.yml").read_text()
    text = report.read_text()
    assert "| sft | train |" in text and "has not landed" in text and "Sample answers" in text
    runs = (out / "runs.html").read_text()  # strop report over the training stages
    assert "sft/train" in runs and "grpo/train" in runs and "<svg" in runs
    capsys.readouterr()
    run_pipeline(pipeline)
    assert capsys.readouterr().out.count("already done; skipping") == 4
    assert json.loads((out / "soup" / "stage.json").read_text()) == soup


def test_required_missing_objective_is_an_error(pipeline):
    spec = yaml.safe_load(pipeline.read_text())
    spec["stages"][2]["optional"] = False
    write(pipeline, spec)
    with pytest.raises(StropError, match="objective 'sppo' is not available"):
        run_pipeline(pipeline)


def test_bad_pipeline_key(tmp_path):
    with pytest.raises(StropError, match="invalid pipeline"):
        run_pipeline(write(tmp_path / "p.yml", {"stages": [{"name": "x", "kind": "train", "confg": "a"}]}))
