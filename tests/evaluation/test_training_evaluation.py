"""Evaluators configured in a training config: run every eval_steps, logged, plotted, and the
forgetting numbers at the end, on the tiny model."""

from __future__ import annotations

import json

import pytest

from strop.config import load_config
from strop.errors import StropError
from strop.train.loop import train


@pytest.mark.slow  # trains 4 steps and evaluates base and tuned
def test_evaluators_run_every_eval_steps_and_forgetting_at_the_end(make_config, tmp_path):
    held = tmp_path / "held.jsonl"
    held.write_text(
        "".join(json.dumps({"instruction": f"Say fox {i}", "output": "Sentiment: positive"}) + "\n" for i in range(3))
    )
    general = tmp_path / "general.txt"
    general.write_text("The quick brown fox jumps over the lazy dog.\n\nhello world hello world")
    path = make_config(
        max_steps=4,
        eval_steps=2,
        learning_rate=5e-2,
        evaluators=[{"type": "match", "data": str(held), "max_new_tokens": 4}],
        eval_forgetting=str(general),
    )
    cfg, base = load_config(path)
    out = train(cfg, base)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r["step"] for r in records if "eval/match/exact_match" in r]
    assert evaluated == [2, 4]
    assert all("eval/general/perplexity" in r for r in records if r["step"] in (2, 4))
    forgetting = json.loads((out / "forgetting.json").read_text())
    assert forgetting["target"]["metric"] == "match/exact_match"
    general_item = forgetting["general"]
    assert general_item["metric"] == "general/perplexity" and not general_item["higher_is_better"]
    assert general_item["change"] == pytest.approx(general_item["tuned"] - general_item["base"])
    assert general_item["tuned"] == pytest.approx(records[-1]["eval/general/perplexity"])
    # lr 5e-2 on a random model moves the perplexity: base and tuned really are two models
    assert abs(general_item["change"]) > 1e-3
    assert records[-1]["forgetting/general_change"] == pytest.approx(general_item["change"])
    assert (out / "loss.png").is_file()
    evals = json.loads((out / "evals.json").read_text())
    assert evals["step"] == 4 and evals["samples"]["match"][0]["prompt"] == "Say fox 0"


def test_a_bad_evaluator_spec_fails_when_the_config_is_read(make_config):
    path = make_config(evaluators=[{"type": "match", "data": "x.jsonl", "formt": "chat"}])
    with pytest.raises(StropError, match=r"evaluators\[0\]: unknown option 'formt' .*did you mean 'format'"):
        load_config(path)


def test_a_missing_evaluator_file_fails_before_training(make_config, tmp_path):
    cfg, base = load_config(make_config(evaluators=[{"type": "perplexity", "data": "absent.txt"}]))
    with pytest.raises(StropError, match="dataset file not found: absent.txt"):
        train(cfg, base)
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


def test_evaluator_metrics_get_one_plot_panel_per_evaluator():
    from strop.train.tracking import _evaluator_curves

    records = [
        {"step": 1, "loss": 2.0},
        {
            "step": 2,
            "loss": 1.0,
            "eval/match/exact_match": 0.5,
            "eval/general/perplexity": 9.0,
            "eval/general/tokens": 40.0,
        },
    ]
    assert _evaluator_curves(records) == {"match": {"exact_match": [(2, 0.5)]}, "general": {"perplexity": [(2, 9.0)]}}
