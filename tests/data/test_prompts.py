"""Prompt-only RL data: row shapes, bad rows named by file and line, the completion budget."""

import json
from types import SimpleNamespace

import pytest

from strop.data.prompts import build_prompt_data
from strop.errors import StropError
from strop.models import load_tokenizer


@pytest.fixture(scope="module")
def tok(tiny_model):
    return load_tokenizer(str(tiny_model))


def data(tmp_path, rows, kind="prompt", **over):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = SimpleNamespace(path=str(path), type=kind, split="train", name=None)
    values = dict(
        datasets=[spec],
        chat_template=None,
        sequence_len=64,
        excess_length_strategy="drop",
        val_set_size=0,
        seed=0,
        rl="grpo",
    )
    return SimpleNamespace(**(values | over))


def test_prompt_rows_keep_their_fields_and_render_with_the_generation_prompt(tmp_path, tok):
    rows = [
        {"prompt": "What is two plus two?", "answer": "4"},
        {
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}],
            "answer": "hi",
        },
    ]
    train, _, _ = build_prompt_data(data(tmp_path, rows), tok, None, 16)
    by_answer = {r["row"]["answer"]: r for r in train}
    assert by_answer["4"]["prompt"] == [{"role": "user", "content": "What is two plus two?"}]
    assert tok.decode(by_answer["4"]["input_ids"]).endswith("<|im_start|>assistant\n")
    assert by_answer["hi"]["prompt"][0]["role"] == "system"


def test_alpaca_rows_are_prompts_with_the_output_kept_as_a_field(tmp_path, tok):
    rows = [{"instruction": "Say hello", "input": "world", "output": "hello world"}]
    train, _, _ = build_prompt_data(data(tmp_path, rows, kind="alpaca"), tok, None, 16)
    assert train[0]["prompt"] == [{"role": "user", "content": "Say hello\n\nworld"}]
    assert train[0]["row"]["output"] == "hello world"


@pytest.mark.parametrize(
    "row, message",
    [
        ({"question": "x"}, r"prompts.jsonl:2: missing field 'prompt'"),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
            "ends with an assistant turn",
        ),
        ({"prompt": ""}, "field 'prompt' is empty"),
    ],
)
def test_bad_rows_are_named_by_file_and_line(tmp_path, tok, row, message):
    with pytest.raises(StropError, match=message):
        build_prompt_data(data(tmp_path, [{"prompt": "fine"}, row]), tok, None, 16)


def test_prompts_must_leave_room_for_the_completion(tmp_path, tok):
    long = [{"prompt": "hello world " * 40}, {"prompt": "short"}]
    train, _, report = build_prompt_data(data(tmp_path, long), tok, None, 16)
    assert len(train) == 1 and report.too_long == 1 and "dropped 1 of 2 prompts" in report.notes[0]
    with pytest.raises(
        StropError, match="prompts.jsonl:1: prompt of .* tokens, over sequence_len - max_completion_length = 48"
    ):
        build_prompt_data(data(tmp_path, long, excess_length_strategy="error"), tok, None, 16)
    with pytest.raises(StropError, match="leaves no room"):
        build_prompt_data(data(tmp_path, long), tok, None, 64)
