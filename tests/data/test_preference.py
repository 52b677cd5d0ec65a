"""Preference data: row formats, bad rows named by file and line, token layout, collation."""

import json
from types import SimpleNamespace

import pytest

from strop.data.preference import (
    build_pair_data,
    build_unpaired_data,
    collate_pairs,
    collate_unpaired,
    encode_prompt,
    pair,
    pair_sequences,
)
from strop.data.tokenize import IGNORE
from strop.errors import StropError
from strop.models import load_tokenizer


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cfg_for(path, kind="dpo", **over):
    spec = SimpleNamespace(path=str(path), type=kind, split="train", name=None)
    values = dict(
        datasets=[spec],
        chat_template=None,
        sequence_len=128,
        excess_length_strategy="drop",
        sample_packing=False,
        val_set_size=0,
        seed=0,
    )
    values.update(over)
    return SimpleNamespace(**values)


@pytest.fixture(scope="module")
def tok(tiny_model):
    return load_tokenizer(str(tiny_model))


def pairs(n=6):
    return [
        {"prompt": f"Classify review {i}", "chosen": "Sentiment: positive", "rejected": "Sentiment: negative"}
        for i in range(n)
    ]


def test_formats_accept_strings_message_lists_and_full_conversations():
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    a = pair({"prompt": msgs, "chosen": [{"role": "assistant", "content": "Hello"}], "rejected": "Go away"}, "f:1")
    assert a == {"prompt": msgs, "chosen": "Hello", "rejected": "Go away"}
    b = pair(
        {
            "chosen": msgs + [{"role": "assistant", "content": "Hello"}],
            "rejected": msgs + [{"role": "assistant", "content": "No"}],
        },
        "f:2",
    )
    assert b["prompt"] == msgs and b["rejected"] == "No"
    c = pair({"prompt": "Hi", "system": "Be brief.", "chosen": "a", "rejected": "b"}, "f:3")
    assert c["prompt"] == msgs


@pytest.mark.parametrize(
    "row,message",
    [
        ({"prompt": "p", "rejected": "b"}, "f.jsonl:7: missing field 'chosen'"),
        (
            {"prompt": "p", "chosen": "same", "rejected": "same "},
            "f.jsonl:7: 'chosen' and 'rejected' are the same reply",
        ),
        ({"prompt": "p", "chosen": "  ", "rejected": "b"}, "f.jsonl:7: field 'chosen' is empty"),
        ({"prompt": "", "chosen": "a", "rejected": "b"}, "f.jsonl:7: field 'prompt' is empty"),
        (
            {"prompt": "p", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"},
            "must end with an assistant message",
        ),
        ({"prompt": "p", "chosen": 3, "rejected": "b"}, "field 'chosen' must be a string"),
    ],
)
def test_bad_rows_name_file_line_and_field(row, message):
    with pytest.raises(StropError, match=message):
        pair(row, "f.jsonl:7")


def test_bad_row_in_a_file_is_reported_with_its_line(tmp_path, tok):
    rows = pairs(3) + [{"prompt": "p", "chosen": "x", "rejected": "x"}]
    path = write_jsonl(tmp_path / "prefs.jsonl", rows)
    with pytest.raises(StropError, match=r"prefs\.jsonl:4: 'chosen' and 'rejected' are the same"):
        build_pair_data(cfg_for(path), tok, None, "dpo")


def test_pair_rows_share_the_prompt_and_rebuild_both_sequences(tmp_path, tok):
    path = write_jsonl(tmp_path / "p.jsonl", pairs(4))
    train, val, report = build_pair_data(cfg_for(path, val_set_size=1), tok, None, "dpo")
    assert len(train) == 3 and len(val) == 1 and report.rows == 4
    row = train[0]
    chosen, rejected = pair_sequences(row)
    assert chosen[: row["prompt_len"]] == rejected[: row["prompt_len"]]
    text = tok.decode(chosen)
    assert text.startswith("<|im_start|>user\nClassify review") and text.endswith("Sentiment: positive<|im_end|>\n")
    # the same ids the chat template gives for the whole conversation
    full = tok.apply_chat_template(
        [
            {"role": "user", "content": text.split("\n")[1].split("<")[0]},
            {"role": "assistant", "content": "Sentiment: positive"},
        ],
        tokenize=False,
    )
    assert tok.decode(chosen) == full


def test_collate_stacks_chosen_then_rejected_with_reply_only_labels(tmp_path, tok):
    path = write_jsonl(tmp_path / "p.jsonl", pairs(3))
    rows, _, _ = build_pair_data(cfg_for(path), tok, None, "dpo")
    batch = collate_pairs(rows, tok.pad_token_id)
    assert batch["input_ids"].shape[0] == 6 and "ref_logps" not in batch
    for i, row in enumerate(rows):
        chosen, rejected = pair_sequences(row)
        p = row["prompt_len"]
        assert batch["input_ids"][i, : len(chosen)].tolist() == chosen
        assert batch["input_ids"][3 + i, : len(rejected)].tolist() == rejected
        assert (batch["labels"][i, :p] == IGNORE).all() and batch["labels"][i, p : len(chosen)].tolist() == chosen[p:]
        assert int(batch["attention_mask"][3 + i].sum()) == len(rejected)
    for row in rows:
        row["ref"] = (-1.0, -2.0)
    assert collate_pairs(rows, tok.pad_token_id)["ref_logps"].tolist() == [-1.0] * 3 + [-2.0] * 3


@pytest.mark.parametrize("strategy", ["drop", "truncate", "error"])
def test_over_long_rows(tmp_path, tok, strategy):
    rows = pairs(3) + [{"prompt": "Classify " * 40, "chosen": "Sentiment: positive " * 10, "rejected": "no"}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    cfg = cfg_for(path, sequence_len=40, excess_length_strategy=strategy)
    if strategy == "error":
        with pytest.raises(StropError, match=r"p\.jsonl:4: \d+ tokens .* over sequence_len=40"):
            build_pair_data(cfg, tok, None, "dpo")
        return
    train, _, report = build_pair_data(cfg, tok, None, "dpo")
    assert len(train) == (3 if strategy == "drop" else 4) and report.too_long == 1 and report.notes
    assert all(len(c) <= 40 and len(r) <= 40 for c, r in map(pair_sequences, train))


def test_wrong_dataset_type_for_objective(tmp_path, tok):
    path = write_jsonl(tmp_path / "p.jsonl", pairs(2))
    with pytest.raises(StropError, match="type 'alpaca' is not read by rl: dpo"):
        build_pair_data(cfg_for(path, "alpaca"), tok, None, "dpo")


def test_unpaired_rows_get_mismatched_kl_completions(tmp_path, tok):
    rows = [
        {
            "prompt": f"Review {i}",
            "completion": f"Sentiment: {'positive' if i % 2 else 'negative'}",
            "label": bool(i % 2),
        }
        for i in range(5)
    ]
    path = write_jsonl(tmp_path / "k.jsonl", rows)
    train, _, _ = build_unpaired_data(cfg_for(path, "kto"), tok, None, "kto")
    assert len(train) == 5
    batch = collate_unpaired(train, tok.pad_token_id)
    assert batch["input_ids"].shape[0] == 10 and batch["desirable"].tolist() == [r["label"] for r in train]
    for i, row in enumerate(train):
        p = row["prompt_len"]
        mismatched = batch["input_ids"][5 + i][: p + len(row["kl_ids"])].tolist()
        assert mismatched == row["input_ids"][:p] + row["kl_ids"]
        partner = next(r for r in train if r["input_ids"][r["prompt_len"] :] == row["kl_ids"])
        assert partner["input_ids"][: partner["prompt_len"]] != row["input_ids"][:p] or partner is row


def test_kto_reads_pairs_as_two_labelled_examples(tmp_path, tok):
    path = write_jsonl(tmp_path / "p.jsonl", pairs(3))
    train, _, _ = build_unpaired_data(cfg_for(path), tok, None, "kto")
    assert sorted(r["label"] for r in train) == [False] * 3 + [True] * 3


def test_kto_label_must_be_boolean(tmp_path, tok):
    path = write_jsonl(tmp_path / "k.jsonl", [{"prompt": "p", "completion": "c", "label": "yes"}])
    with pytest.raises(StropError, match=r"k\.jsonl:1: field 'label' must be true or false"):
        build_unpaired_data(cfg_for(path, "kto"), tok, None, "kto")


def test_prompt_is_rendered_with_generation_prompt(tok):
    text, ids = encode_prompt(tok, "Hi")
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n" and tok.decode(ids) == text
