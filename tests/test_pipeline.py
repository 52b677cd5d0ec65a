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
    write(tmp_path / "grpo.yml", {"rl": "grpo", "datasets": [{"path": "data.jsonl", "type": "alpaca"}]})
    write(tmp_path / "soup.yml", {"merge_method": "linear", "models": [{"model": "{previous}"}, {"model": str(tiny_model)}]})
    return write(tmp_path / "pipeline.yml", {
        "base_model": str(tiny_model), "output_dir": str(tmp_path / "pipe"), "sample_prompts": ["hello"],
        "sample_max_new_tokens": 3,
        "stages": [{"name": "sft", "kind": "train", "config": "config.yml", "set": {"max_steps": 2}},
                   {"name": "grpo", "kind": "train", "config": "grpo.yml", "optional": True},
                   {"name": "soup", "kind": "merge", "config": "soup.yml"}],
    })


def test_pipeline_chains_stages_skips_missing_objective_and_resumes(pipeline, tmp_path, capsys):
    report = run_pipeline(pipeline)
    out = tmp_path / "pipe"
    sft = json.loads((out / "sft" / "stage.json").read_text())
    assert (out / "sft" / "merged" / "model.safetensors").is_file() and sft["model"].endswith("merged")
    assert "skipped" in json.loads((out / "grpo" / "stage.json").read_text())
    soup = json.loads((out / "soup" / "stage.json").read_text())
    assert (out / "soup" / "merged" / "config.json").is_file()
    assert sft["merged"] in (out / "soup" / "merge.yml").read_text()
    text = report.read_text()
    assert "| sft | train |" in text and "has not landed" in text and "Sample answers" in text
    capsys.readouterr()
    run_pipeline(pipeline)
    assert capsys.readouterr().out.count("already done; skipping") == 3
    assert json.loads((out / "soup" / "stage.json").read_text()) == soup


def test_required_missing_objective_is_an_error(pipeline):
    spec = yaml.safe_load(pipeline.read_text())
    spec["stages"][1]["optional"] = False
    write(pipeline, spec)
    with pytest.raises(StropError, match="objective 'grpo' is not available"):
        run_pipeline(pipeline)


def test_bad_pipeline_key(tmp_path):
    with pytest.raises(StropError, match="invalid pipeline"):
        run_pipeline(write(tmp_path / "p.yml", {"stages": [{"name": "x", "kind": "train", "confg": "a"}]}))
