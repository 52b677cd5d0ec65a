"""Task mixtures inside `strop train`: weights and temperature decide what is trained on, each dataset
keeps its own format, and loss, rows and tokens are logged per dataset."""

import json

import pytest
import torch
from tests.conftest import alpaca_rows, write_jsonl

from strop.config import load_config
from strop.data import build_sft_data, collate
from strop.data.mixture import DATASET_IDS, dataset_names, mixture_counts
from strop.errors import StropError
from strop.models import load_model, load_tokenizer
from strop.objectives.sft import nll_by_dataset, summed_nll
from strop.train.loop import train


def _three_sources(tmp_path) -> list[dict]:
    """An alpaca, a chat and a completion dataset of 30 rows each: three prompt formats."""
    alpaca = write_jsonl(tmp_path / "alpaca.jsonl", alpaca_rows(30))
    chat = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {"messages": [{"role": "user", "content": f"count {i}"}, {"role": "assistant", "content": f"{i} {i + 1}"}]}
            for i in range(30)
        ],
    )
    completion = write_jsonl(
        tmp_path / "plain.jsonl", [{"prompt": f"Q{i}: ", "completion": f"answer {i % 7}"} for i in range(30)]
    )
    return [
        {"path": str(alpaca), "type": "alpaca", "weight": 0.6},
        {"path": str(chat), "type": "chat", "weight": 0.3},
        {"path": str(completion), "type": "completion", "weight": 0.1},
    ]


def _records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _check_loss_split(record: dict) -> None:
    """A step's per-dataset losses, weighted by their token counts, give the logged loss."""
    names = [k.split("/", 1)[1] for k in record if k.startswith("tokens/")]
    assert sorted(names) == ["alpaca", "chat", "plain"]
    tokens = sum(record[f"tokens/{n}"] for n in names)
    mixed = sum(record[f"loss/{n}"] * record[f"tokens/{n}"] for n in names if f"loss/{n}" in record) / tokens
    assert mixed == pytest.approx(record["loss"], rel=1e-4)


@pytest.mark.parametrize("packing", [False, True])
def test_trained_rows_follow_the_weights(tmp_path, make_config, packing):
    """Over one epoch the rows actually trained on, counted per dataset from the batches, are the
    weights' largest-remainder shares of the 90 examples: 54 / 27 / 9 (not the 30 / 30 / 30 on disk);
    each step logs loss, rows and tokens per dataset."""
    path = make_config(
        datasets=_three_sources(tmp_path), max_steps=None, num_epochs=1, micro_batch_size=6, sample_packing=packing
    )
    cfg, base = load_config(path)
    records = _records(train(cfg, base))
    seen = {name: records[-1][f"rows_seen/{name}"] for name in ("alpaca", "chat", "plain")}
    assert seen == {"alpaca": 54, "chat": 27, "plain": 9}
    total = sum(seen.values())
    for name, weight in zip(seen, (0.6, 0.3, 0.1)):
        assert abs(seen[name] / total - weight) < 1 / total
    for record in records:
        _check_loss_split(record)
        if not packing:
            assert sum(record[f"rows/{n}"] for n in seen) == 6


def test_temperature_flattens_toward_uniform(tmp_path, make_config, tiny_model):
    cfg, base = load_config(make_config(datasets=_three_sources(tmp_path), mixture_temperature=4.0))
    rows, _, _ = build_sft_data(cfg, load_tokenizer(str(tiny_model)), base)
    owners = [row[DATASET_IDS][0] for row in rows]
    drawn = [owners.count(d) for d in range(3)]
    assert drawn == mixture_counts([30, 30, 30], [0.6, 0.3, 0.1], 90, temperature=4.0)
    assert drawn[0] < 54 and drawn[2] > 9  # flatter than the weights


def test_each_dataset_keeps_its_format_and_tags(tmp_path, make_config, tiny_model):
    """Per-dataset types: alpaca, chat and completion rows are rendered each by its own converter; every
    token carries its dataset's index, and a single dataset is not tagged at all."""
    cfg, base = load_config(make_config(datasets=_three_sources(tmp_path)))
    tokenizer = load_tokenizer(str(tiny_model))
    train_rows, _, report = build_sft_data(cfg, tokenizer, base)
    owners = [row[DATASET_IDS][0] for row in train_rows]
    assert [owners.count(d) for d in range(3)] == [54, 27, 9]
    assert all(set(row[DATASET_IDS]) == {row[DATASET_IDS][0]} for row in train_rows)
    plain = next(row for row in train_rows if row[DATASET_IDS][0] == 2)
    assert tokenizer.decode(plain["input_ids"]).startswith("Q")  # completion: raw text, no chat template
    assert any("mixture (T=1)" in note for note in report.notes)
    single, _, _ = build_sft_data(load_config(make_config())[0], tokenizer, base)
    assert DATASET_IDS not in single[0]


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))],
)
def test_split_loss_equals_the_whole(tmp_path, make_config, tiny_model, device):
    """The per-dataset sums (logits path and the fused head path, Triton's on CUDA) add up to the plain
    summed NLL."""
    from strop.kernels import causal_lm_group_losses

    cfg, base = load_config(make_config(datasets=_three_sources(tmp_path)))
    tokenizer = load_tokenizer(str(tiny_model))
    rows, _, _ = build_sft_data(cfg, tokenizer, base)
    some = [[row for row in rows if row[DATASET_IDS][0] == d][:3] for d in range(3)]
    batch = {k: v.to(device) for k, v in collate(some[0] + some[1] + some[2], tokenizer.pad_token_id).items()}
    model = load_model(str(tiny_model)).to(device).eval()
    with torch.no_grad():
        whole = summed_nll(model, batch)
        split = nll_by_dataset(model, batch, 3)
        fused = causal_lm_group_losses(
            model, batch["input_ids"], batch["labels"], batch[DATASET_IDS], 3, batch["attention_mask"]
        )
    assert (split > 0).all()
    torch.testing.assert_close(split.sum(), whole, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(fused, split, rtol=1e-4, atol=1e-3)


def test_dataset_names_are_unique():
    assert dataset_names(["a/math.jsonl", "b/chat.jsonl", "c/math.jsonl"]) == ["math0", "chat", "math2"]


def test_bad_mixture_keys_name_the_key(tmp_path, make_config):
    sources = _three_sources(tmp_path)
    sources[1]["weight"] = -1
    with pytest.raises(StropError, match=r"datasets\.1\.weight"):
        load_config(make_config(datasets=sources))
    sources[1]["weight"] = "lots"
    with pytest.raises(StropError, match=r"datasets\.1\.weight"):
        load_config(make_config(datasets=sources))
    for source in sources:
        source["weight"] = 0
    with pytest.raises(StropError, match="every dataset has weight 0"):
        load_config(make_config(datasets=sources))
    with pytest.raises(StropError, match="mixture_temperature"):
        load_config(make_config(mixture_temperature=0))
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    with pytest.raises(StropError, match=r"datasets\[0\]\.weight: task mixtures are drawn for SFT"):
        load_config(make_config(rl="dpo", datasets=[{"path": str(pairs), "type": "dpo", "weight": 1.0}]))
