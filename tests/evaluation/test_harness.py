"""The lm-evaluation-harness bridge: one multiple-choice task defined in a local YAML over a local
JSONL (nothing downloaded), run through `strop eval --tasks` on an adapter folder, against the
accuracy computed here from the adapter model's own log-likelihoods."""

from __future__ import annotations

import json

import pytest
import torch

from strop.cli import main

pytest.importorskip("lm_eval")

DOCS = [
    ("What is two plus two?", ["Four.", "The lazy dog.", "hello"], 0),
    ("Classify the sentiment of this review.", ["Sentiment: positive", "fox", "world"], 0),
    ("The quick brown fox jumps over the", ["lazy dog.", "two", "review"], 0),
    ("hello", ["world", "Sentiment: negative", "quick"], 1),
]


def write_task(folder):
    data = folder / "qa.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": c, "label": g}) + "\n" for q, c, g in DOCS))
    (folder / "tiny_qa.yaml").write_text(
        f"task: tiny_qa\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "output_type: multiple_choice\ntest_split: test\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_target: "{{label}}"\ndoc_to_choice: "{{choices}}"\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\nmetadata:\n  version: 1.0\n"
    )


def choice_logp(model, tokenizer, context: str, continuation: str) -> float:
    """log p(continuation | context), split as the harness splits it: the ids of context+continuation
    after the ids of the context alone."""
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    n = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    ids = torch.tensor([whole])
    with torch.no_grad():
        logps = model(ids).logits[0, :-1].float().log_softmax(-1).gather(1, ids[0, 1:, None])[:, 0]
    return float(logps[n - 1 :].sum())


@pytest.mark.slow  # imports the harness (seconds) and runs a task
def test_a_local_task_on_an_adapter_matches_its_own_log_likelihoods(tiny_model, tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    torch.manual_seed(11)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model),
        LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    model.save_pretrained(tmp_path / "adapter")
    write_task(tmp_path)
    out = tmp_path / "scores.json"
    assert (
        main(
            [
                "eval",
                str(tmp_path / "adapter"),
                "--tasks",
                "tiny_qa",
                "--include-path",
                str(tmp_path),
                "--batch-size",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    accuracy = json.loads(out.read_text())["tasks"]["tiny_qa"]["acc,none"]
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    picks = [
        max(range(3), key=lambda i: choice_logp(model, tokenizer, f"Question: {q}\nAnswer:", " " + c[i]))
        for q, c, _ in DOCS
    ]
    assert accuracy == pytest.approx(sum(p == g for p, (_, _, g) in zip(picks, DOCS)) / len(DOCS))


@pytest.mark.slow  # indexes the harness's own task files
def test_unknown_task_is_named(tiny_model, tmp_path, capsys):
    assert main(["eval", str(tiny_model), "--tasks", "no_such_task_xyz", "--include-path", str(tmp_path)]) == 2
    assert "unknown lm-eval task(s) no_such_task_xyz" in capsys.readouterr().err
