"""`strop report` over run folders written here by hand: every section shows what the files hold."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from strop.cli import main
from strop.errors import StropError
from strop.evaluation.report import write_report
from strop.evaluation.report.charts import line_chart


def make_run(folder, lr, losses, exact, forgetting=None, reply="Sentiment: positive"):
    folder.mkdir(parents=True)
    (folder / "strop_config.yml").write_text(
        yaml.safe_dump(
            {
                "base_model": "tiny",
                "adapter": "lora",
                "learning_rate": lr,
                "lora_r": 4,
                "datasets": [{"path": "d.jsonl", "type": "alpaca"}],
            }
        )
    )
    records = [
        {"step": i + 1, "loss": loss, "tokens_per_s": 100.0 * (i + 1), "elapsed_s": float(i + 1)}
        for i, loss in enumerate(losses)
    ]
    records[-1] |= {"eval/match/exact_match": exact, "gpu_peak_gib": 1.5}
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "evals.json").write_text(
        json.dumps(
            {
                "step": len(losses),
                "metrics": {},
                "samples": {"match": [{"prompt": "Great kettle.", "reference": "Sentiment: positive", "reply": reply}]},
            }
        )
    )
    if forgetting:
        (folder / "forgetting.json").write_text(json.dumps(forgetting))
    return folder


FORGETTING = {
    "target": {"metric": "match/exact_match", "base": 0.0, "tuned": 0.75, "change": 0.75, "higher_is_better": True},
    "general": {"metric": "general/perplexity", "base": 20.0, "tuned": 23.0, "change": 3.0, "higher_is_better": False},
    "samples": {"base": {"match": [{"prompt": "Great kettle.", "reply": "I love kettles!"}]}, "tuned": {}},
}


def test_report_compares_two_runs(tmp_path):
    a = make_run(tmp_path / "lr1", 1e-4, [2.0, 1.5, 1.0], 0.5, FORGETTING)
    b = make_run(tmp_path / "lr2", 2e-4, [2.0, 1.2], 0.75, reply="Sentiment: negative")
    html_path, md_path = write_report([a, b], tmp_path / "out" / "cmp.html", "two runs")
    html, md = html_path.read_text(), md_path.read_text()
    # config differences: only the learning rate differs
    assert "| learning_rate | 0.0001 | 0.0002 |" in md and "| lora_r |" not in md
    # speed and memory from the last records: 300 and 200 tokens/s, peak 1.5 GiB
    assert "| tokens/s | 300 | 200 |" in md and "| peak GPU GiB | 1.5 | 1.5 |" in md
    assert "| eval/match/exact_match | 0.5 | 0.75 |" in md
    # forgetting: perplexity up by 3 reads as worse, the target gain as better
    assert "| lr1 | general | general/perplexity | 20 | 23 | 3 | worse |" in md
    assert "| lr1 | target | match/exact_match | 0 | 0.75 | 0.75 | better |" in md
    # samples side by side: base (from forgetting.json), then each run
    assert "| Great kettle. | Sentiment: positive | I love kettles! | Sentiment: positive | Sentiment: negative |" in md
    # self-contained: charts are inline SVG, nothing is fetched or scripted
    assert html.count("<svg") == 2 and "<script" not in html
    assert not re.search(r"\b(src|href)=", html)
    assert "loss" in html and "eval/match/exact_match" in html


def test_one_run_lists_the_keys_set_away_from_their_defaults(tmp_path):
    html_path, md_path = write_report([make_run(tmp_path / "only", 2e-4, [1.0], 0.5)], tmp_path / "r.html")
    md = md_path.read_text()
    # lora_r 4 (default 8) and adapter lora (default full) are shown; learning_rate 2e-4 is the default
    assert "| lora_r | 4 |" in md and '| adapter | "lora" |' in md and "| learning_rate |" not in md


def test_line_chart_places_points_by_value():
    svg = line_chart("loss", {"a": [(0, 0.0), (10, 1.0)]})
    # plot box: x 56..448 (460 wide less 56 left and 12 right margins), y 28..210 (250 high less 28 top, 40 bottom)
    assert 'points="56.0,210.0 448.0,28.0"' in svg


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StropError, match="neither strop_config.yml nor metrics.jsonl"):
        write_report([tmp_path / "empty"], tmp_path / "r.html")
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()
