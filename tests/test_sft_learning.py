"""Learning, measured on the real default model: LoRA SFT of SmolLM2-135M-Instruct on the quickstart task.

The base model answers review-sentiment questions in free prose; the task asks for exactly
"Sentiment: positive" or "Sentiment: negative". Held-out reviews use products and phrasings absent from
training, so exact match measures what the adapter learned, not what it memorised.
"""

import pytest

from strop.commands.train import quickstart_config
from strop.config import load_config
from strop.evaluation import Subject, build_evaluators
from strop.models.saved import load_for_chat
from strop.train.loop import train

pytestmark = pytest.mark.integration


def test_lora_sft_on_smollm2_learns_the_held_out_task(tmp_path, capsys):
    config = quickstart_config()
    [held_out] = build_evaluators(
        [{"type": "match", "data": str(config.parent / "held_out.jsonl"), "max_new_tokens": 12, "samples": 100}]
    )
    model, tokenizer = load_for_chat("smollm2-135m-instruct")
    before = held_out(Subject.of(model, tokenizer)).metrics["match/exact_match"]
    del model
    cfg, base = load_config(config, [f"output_dir={tmp_path / 'run'}", "sample_prompts=null"])
    out = train(cfg, base)
    model, tokenizer = load_for_chat(str(out))
    result = held_out(Subject.of(model, tokenizer))
    after, replies = result.metrics["match/exact_match"], [s["reply"] for s in result.samples]
    with capsys.disabled():
        print(f"\nheld-out exact match (n={len(replies)}): base {before:.3f} -> LoRA-tuned {after:.3f}")
    assert before <= 0.1
    assert after >= 0.8, replies
