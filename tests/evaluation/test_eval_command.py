"""`strop eval` end to end on the tiny model: match on a file, an evaluator list, forgetting against the
base an adapter names."""

from __future__ import annotations

import json

import pytest
import yaml

from strop.cli import main


@pytest.fixture(scope="module")
def adapter(tiny_model, tmp_path_factory):
    """A LoRA adapter with random (non-zero) B, so the tuned model differs from its base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("adapter")
    torch.manual_seed(5)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model),
        LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    model.save_pretrained(folder)
    return folder


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_eval_match_writes_scores(tiny_model, tmp_path, capsys):
    data = write_rows(tmp_path / "held.jsonl", [{"instruction": "Say fox", "output": "fox"}] * 2)
    out = tmp_path / "scores.json"
    assert main(["eval", str(tiny_model), data, "--max-new-tokens", "3", "--out", str(out)]) == 0
    scores = json.loads(out.read_text())
    assert set(scores["metrics"]) == {"match/exact_match", "match/normalized_match"}
    assert len(scores["samples"]["match"]) == 2
    assert "exact_match" in capsys.readouterr().out


@pytest.mark.slow  # four model loads, base and tuned evaluated
def test_eval_forgetting_against_the_adapters_base(tiny_model, adapter, tmp_path):
    general = tmp_path / "general.txt"
    general.write_text("The quick brown fox jumps over the lazy dog.\n\nhello world hello world")
    held = write_rows(tmp_path / "held.jsonl", [{"instruction": "Say fox", "output": "fox"}] * 2)
    evals = tmp_path / "evals.yml"
    evals.write_text(yaml.safe_dump({"evaluators": [{"type": "match", "data": held, "max_new_tokens": 3}]}))
    out = tmp_path / "forgetting.json"
    assert main(["eval", str(adapter), "--evals", str(evals), "--forgetting", str(general), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["base"] == str(tiny_model)
    general_item = result["forgetting"]["general"]
    assert general_item["metric"] == "general/perplexity"
    assert general_item["change"] == pytest.approx(general_item["tuned"] - general_item["base"])
    assert abs(general_item["change"]) > 1e-3
    # the base side of the comparison is the base model's own perplexity
    base_only = tmp_path / "base.json"
    assert main(["eval", str(tiny_model), str(general), "--metric", "perplexity", "--out", str(base_only)]) == 0
    assert json.loads(base_only.read_text())["metrics"]["perplexity/perplexity"] == pytest.approx(
        general_item["base"], rel=1e-6
    )
    target = result["forgetting"]["target"]
    assert target["metric"] == "match/exact_match" and target["higher_is_better"]
    assert set(result["forgetting"]["samples"]["base"]) == {"match", "general"}


def test_implicit_reward_of_a_model_without_adapter_needs_a_reference(tiny_model, tmp_path, capsys):
    pairs = write_rows(
        tmp_path / "pairs.jsonl", [{"prompt": "What is two plus two?", "chosen": "Four.", "rejected": "dog"}]
    )
    assert main(["eval", str(tiny_model), pairs, "--metric", "preference"]) == 2
    assert "set `reference` to the base model's folder" in capsys.readouterr().err
    assert main(["eval", str(tiny_model), pairs, "--metric", "preference", "--set", f"reference={tiny_model}"]) == 0
    assert '"chosen": "Four."' in capsys.readouterr().out


def test_eval_needs_something_to_do(tiny_model, capsys):
    assert main(["eval", str(tiny_model)]) == 2
    assert "give DATA, --evals FILE, --forgetting GENERAL or --tasks" in capsys.readouterr().err


def test_forgetting_without_a_base_is_refused(tiny_model, tmp_path, capsys):
    general = tmp_path / "general.txt"
    general.write_text("hello world")
    assert main(["eval", str(tiny_model), "--forgetting", str(general)]) == 2
    assert "--forgetting needs --base" in capsys.readouterr().err
