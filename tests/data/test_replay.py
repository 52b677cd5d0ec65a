"""Replay of a general-data share (continual fine-tuning): the mixture holds the share asked for, through
the SFT and the preference loaders, and objectives that cannot read the rows refuse the key."""

import json

import pytest

from strop.config import load_config
from strop.data.replay import replay_count
from strop.errors import StropError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def alpaca_rows(n: int) -> list[dict]:
    return [
        {"instruction": f"Task {i}", "output": f"Sentiment: {'positive' if i % 2 else 'negative'}"} for i in range(n)
    ]


GENERAL = [{"instruction": f"General question {i}", "output": f"General answer {i}"} for i in range(5)]


def test_replay_count_makes_the_share():
    assert replay_count(0.2, 80) == 20  # 20 / (80 + 20) = 0.2
    assert replay_count(0.5, 7) == 7


@pytest.mark.parametrize(("share", "task", "expected"), [(0.25, 12, 4), (0.5, 10, 10)])
def test_sft_mixture_holds_the_share(make_config, tmp_path, share, task, expected):
    from transformers import AutoTokenizer

    from strop.data import build_sft_data

    general = write_jsonl(tmp_path / "general.jsonl", GENERAL)
    cfg, base = load_config(
        make_config(rows=alpaca_rows(task), replay={"path": str(general), "type": "alpaca", "share": share})
    )
    tokenizer = AutoTokenizer.from_pretrained(cfg.base_model)
    train, _, report = build_sft_data(cfg, tokenizer, base)
    assert report.rows == task + expected == len(train)
    texts = [tokenizer.decode(t["input_ids"]) for t in train]
    replayed = [t for t in texts if "General answer" in t]
    assert len(replayed) == expected  # 10 from a 5-row file: the file twice
    if expected <= len(GENERAL):
        assert len(set(replayed)) == expected  # drawn without replacement


def test_preference_mixture(make_config, tmp_path):
    from transformers import AutoTokenizer

    from strop.data.preference import build_pair_data

    pairs = [{"prompt": f"Say {i}", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(6)]
    general = [{"prompt": f"General {i}", "chosen": "good", "rejected": "bad"} for i in range(4)]
    task_file, general_file = write_jsonl(tmp_path / "pairs.jsonl", pairs), write_jsonl(tmp_path / "g.jsonl", general)
    cfg, base = load_config(
        make_config(
            rl="dpo",
            datasets=[{"path": str(task_file), "type": "dpo"}],
            replay={"path": str(general_file), "type": "dpo", "share": 0.25},
        )
    )
    train, _, report = build_pair_data(cfg, AutoTokenizer.from_pretrained(cfg.base_model), base, "dpo")
    assert report.rows == 6 + 2 == len(train)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"rl": "dpo", "replay_type": "alpaca"}, "replay.type: 'alpaca' rows are not read by dpo"),
        ({"rl": "grpo", "replay_type": "alpaca"}, "replay: mixes general rows into SFT-style and preference data"),
        ({"share": 1.0}, "share"),
    ],
)
def test_replay_refusals(make_config, tmp_path, keys, message):
    general = write_jsonl(tmp_path / "general.jsonl", GENERAL)
    replay = {"path": str(general), "type": keys.pop("replay_type", "alpaca"), "share": keys.pop("share", 0.2)}
    extra = {"datasets": [{"path": str(general), "type": "dpo"}]} if keys.get("rl") == "dpo" else {}
    with pytest.raises(StropError, match=message):
        load_config(make_config(replay=replay, **keys, **extra))


def test_replay_beside_several_datasets_is_its_own_source(make_config, tmp_path):
    """With two datasets the loader tags each token with its source for the per-dataset metrics; the
    replay rows are a third source with their own id and name."""
    from transformers import AutoTokenizer

    from strop.data import build_sft_data
    from strop.data.mixture import DATASET_IDS, dataset_names
    from strop.data.replay import source_paths

    first = write_jsonl(tmp_path / "first.jsonl", alpaca_rows(4))
    second = write_jsonl(tmp_path / "second.jsonl", alpaca_rows(4))
    general = write_jsonl(tmp_path / "general.jsonl", GENERAL)
    cfg, base = load_config(
        make_config(
            datasets=[{"path": str(first), "type": "alpaca"}, {"path": str(second), "type": "alpaca"}],
            replay={"path": str(general), "type": "alpaca", "share": 0.2},
        )
    )
    assert dataset_names(source_paths(cfg)) == ["first", "second", "general"]
    tokenizer = AutoTokenizer.from_pretrained(cfg.base_model)
    train, _, _ = build_sft_data(cfg, tokenizer, base)
    owner = {tokenizer.decode(t["input_ids"]).count("General answer") > 0: t[DATASET_IDS][0] for t in train}
    assert owner[True] == 2 and owner[False] in (0, 1)


def test_replay_with_mixture_weights_is_refused(make_config, tmp_path):
    first = write_jsonl(tmp_path / "first.jsonl", alpaca_rows(4))
    general = write_jsonl(tmp_path / "general.jsonl", GENERAL)
    with pytest.raises(StropError, match="give the general data a weight"):
        load_config(
            make_config(
                datasets=[{"path": str(first), "type": "alpaca", "weight": 1.0}],
                replay={"path": str(general), "type": "alpaca", "share": 0.2},
            )
        )
