import json

import pytest

from strop.data.formats import FORMATS
from strop.data.readers import read_rows
from strop.data.tokenize import IGNORE, tokenize_example
from strop.errors import StropError


def test_alpaca_to_messages():
    ex = FORMATS["alpaca"]({"instruction": "Do", "input": "this", "output": "done"}, "f:1")
    assert ex["messages"] == [{"role": "user", "content": "Do\n\nthis"}, {"role": "assistant", "content": "done"}]


def test_sharegpt_converted():
    ex = FORMATS["chat"]({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}, "f:1")
    assert ex["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]


@pytest.mark.parametrize(
    "kind,row,message",
    [
        ("alpaca", {"instruction": "x"}, r"f:3: missing field 'output'"),
        ("alpaca", {"instruction": "x", "output": 5}, r"f:3: field 'output' must be a string, got int"),
        ("chat", {"messages": [{"role": "user", "content": "hi"}]}, r"f:3: the conversation has no assistant"),
        ("chat", {"messages": [{"role": "robot", "content": "hi"}]}, r"f:3: messages\[0\]: field 'role'"),
        ("completion", {"prompt": "a"}, r"f:3: missing field 'completion'"),
        ("text", {"text": ""}, r"f:3: field 'text' is empty"),
    ],
)
def test_bad_rows_name_location_and_field(kind, row, message):
    with pytest.raises(StropError, match=message):
        FORMATS[kind](row, "f:3")


def test_malformed_jsonl_names_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\n\n{"text": broken}\n')
    with pytest.raises(StropError, match=r"d.jsonl:3: malformed JSON"):
        list(read_rows(str(path)))


def test_json_csv_parquet_read_the_same(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "d"}]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    (tmp_path / "d.csv").write_text("prompt,completion\na,b\nc,d\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    for name in ("d.json", "d.csv", "d.parquet"):
        assert [r for _, r in read_rows(name, tmp_path)] == rows
    assert [w for w, _ in read_rows("d.csv", tmp_path)][1].endswith("d.csv:line 3")


def test_missing_file_is_clear():
    with pytest.raises(StropError, match="dataset file not found: nope.jsonl"):
        list(read_rows("nope.jsonl"))


def test_labels_cover_assistant_reply_only(tiny_model):
    from strop.models import load_tokenizer

    tok = load_tokenizer(str(tiny_model))
    messages = [
        {"role": "user", "content": "hello world"},
        {"role": "assistant", "content": "Sentiment: positive"},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "Sentiment: negative"},
    ]
    out = tokenize_example({"messages": messages}, tok, train_on_inputs=False, where="x")
    trained = tok.decode([t for t, l in zip(out["input_ids"], out["labels"]) if l != IGNORE])
    assert trained == "Sentiment: positive<|im_end|>\nSentiment: negative<|im_end|>\n"
    every = tokenize_example({"messages": messages}, tok, train_on_inputs=True, where="x")
    assert every["labels"] == every["input_ids"]


def test_completion_labels_and_eos(tiny_model):
    from strop.models import load_tokenizer

    tok = load_tokenizer(str(tiny_model))
    out = tokenize_example({"prompt": "What is two plus two? ", "completion": "Four."}, tok, False, "x")
    assert out["input_ids"][-1] == tok.eos_token_id
    trained = tok.decode([t for t, l in zip(out["input_ids"], out["labels"]) if l != IGNORE])
    assert trained == "Four.<|im_end|>"
