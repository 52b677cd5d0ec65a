"""Whole merges on tiny random Llama checkpoints: identities, outputs that load, clear errors."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest
import torch
from merge_helpers import load_state, write_config

from strop.errors import StropError
from strop.merge import run_merge


def merge(tmp_path, config: dict, **kwargs):
    out = run_merge(write_config(tmp_path, config), tmp_path / "out", progress=False, **kwargs)
    return out, load_state(out)


def assert_same(state: dict, expected: dict, atol: float = 1e-6) -> None:
    assert state.keys() == expected.keys()
    for name in expected:
        assert torch.allclose(state[name].float(), expected[name].float(), atol=atol), name


def test_linear_merge_of_model_with_itself_is_itself(tmp_path, models):
    config = {"merge_method": "linear", "models": [{"model": models["a"], "parameters": {"weight": 0.3}}] * 2}
    _, state = merge(tmp_path, config)
    assert_same(state, load_state(models["a"]))


def test_linear_matches_manual_average_and_loads(tmp_path, models):
    import transformers

    config = {
        "merge_method": "linear",
        "models": [
            {"model": models["a"], "parameters": {"weight": 1}},
            {"model": models["b"], "parameters": {"weight": 3}},
        ],
    }
    out, state = merge(tmp_path, config)
    a, b = load_state(models["a"]), load_state(models["b"])
    assert_same(state, {k: (a[k] + 3 * b[k]) / 4 for k in a})
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    loaded = model.state_dict()
    for name, tensor in state.items():
        assert torch.equal(loaded[name], tensor), name
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, 256) and torch.isfinite(logits).all()


def test_slerp_endpoints_and_per_tensor_filters(tmp_path, models):
    base = {
        "merge_method": "slerp",
        "base_model": models["a"],
        "models": [{"model": models["a"]}, {"model": models["b"]}],
    }
    for t, expected in ((0.0, "a"), (1.0, "b")):
        _, state = merge(tmp_path, {**base, "parameters": {"t": t}}, overwrite=True)
        assert_same(state, load_state(models[expected]), atol=1e-5)
    filtered = {"t": [{"filter": "self_attn", "value": 1.0}, {"value": 0.0}]}
    _, state = merge(tmp_path, {**base, "parameters": filtered}, overwrite=True)
    a, b = load_state(models["a"]), load_state(models["b"])
    for name, tensor in state.items():
        assert torch.allclose(tensor, (b if "self_attn" in name else a)[name], atol=1e-5), name


def test_task_arithmetic_lambda_one_returns_the_model(tmp_path, models):
    config = {"merge_method": "task_arithmetic", "base_model": models["base"], "models": [{"model": models["a"]}]}
    _, state = merge(tmp_path, config)
    assert_same(state, load_state(models["a"]), atol=1e-6)


def test_task_arithmetic_negation_and_ties_dtype(tmp_path, models):
    config = {
        "merge_method": "ties",
        "base_model": models["base"],
        "models": [{"model": models["a"], "parameters": {"density": 0.5}}, {"model": models["b"]}],
        "parameters": {"weight": 0.5},
        "dtype": "bfloat16",
    }
    out, state = merge(tmp_path, config)
    assert all(t.dtype == torch.bfloat16 for t in state.values())
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert (out / "generation_config.json").is_file()


def test_dare_density_one_equals_undropped_and_seed_reproducible(tmp_path, models):
    def cfg(method: str, density: float, seed: int = 0) -> dict:
        return {
            "merge_method": method,
            "base_model": models["base"],
            "models": [{"model": models["a"]}, {"model": models["b"], "parameters": {"weight": 0.7}}],
            "parameters": {"density": density},
            "seed": seed,
        }

    for dare, plain in (("dare_linear", "task_arithmetic"), ("dare_ties", "ties")):
        plain_cfg = cfg(plain, 1.0)
        if plain == "task_arithmetic":
            del plain_cfg["parameters"]
        else:
            plain_cfg["parameters"]["normalize"] = False  # dare_ties' default (mergekit's), not ties'
        _, expected = merge(tmp_path, plain_cfg, overwrite=True)
        _, state = merge(tmp_path, cfg(dare, 1.0), overwrite=True)
        assert_same(state, expected, atol=0)
        _, first = merge(tmp_path, cfg(dare, 0.5, seed=1), overwrite=True)
        _, again = merge(tmp_path, cfg(dare, 0.5, seed=1), overwrite=True)
        _, other = merge(tmp_path, cfg(dare, 0.5, seed=2), overwrite=True)
        assert_same(first, again, atol=0)
        assert any(not torch.equal(first[k], other[k]) for k in first)


def test_sharded_output_and_sharded_input(tmp_path, models):
    config = {"merge_method": "model_soup", "models": [{"model": models["a"]}, {"model": models["b"]}]}
    out, state = merge(tmp_path, config, max_shard_bytes=200_000)
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(state)
    # The sharded output is itself a valid input: souping it with itself changes nothing.
    again = write_config(tmp_path, {"merge_method": "linear", "models": [{"model": out}, {"model": out}]}, "again.yml")
    result = run_merge(again, tmp_path / "again", progress=False)
    assert_same(load_state(result), state)


def test_tied_embeddings_merge_only_present_tensors(tmp_path, models):
    import transformers

    config = {"merge_method": "linear", "models": [{"model": models["tied"]}, {"model": models["tied_b"]}]}
    out, state = merge(tmp_path, config)
    assert "lm_head.weight" not in state
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_shape_mismatch_lists_differing_tensors(tmp_path, models):
    config = {"merge_method": "linear", "models": [{"model": models["a"]}, {"model": models["other_shape"]}]}
    with pytest.raises(StropError) as err:
        merge(tmp_path, config)
    msg = str(err.value)
    assert "model.layers.0.mlp.up_proj.weight: shape [128, 64] vs [96, 64]" in msg
    assert "(6 differing tensors)" in msg
    config = {"merge_method": "linear", "models": [{"model": models["a"]}, {"model": models["tied"]}]}
    with pytest.raises(StropError, match="lm_head.weight: missing from .*tied"):
        merge(tmp_path, config)
    assert not (tmp_path / "out").exists()


def test_tokenizer_copied_and_mismatch_rejected(tmp_path, models):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(models["a"], a)
    shutil.copytree(models["b"], b)
    for folder in (a, b):
        (folder / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"x": 0}}}))
        (folder / "tokenizer_config.json").write_text("{}")
    config = {"merge_method": "linear", "models": [{"model": a}, {"model": b}]}
    out, _ = merge(tmp_path, config)
    assert (out / "tokenizer.json").read_text() == (a / "tokenizer.json").read_text()
    assert (out / "tokenizer_config.json").is_file()
    (b / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"y": 0}}}))
    with pytest.raises(StropError, match="tokenizers differ"):
        merge(tmp_path, config, overwrite=True)


def test_existing_output_needs_overwrite_and_failures_leave_nothing(tmp_path, models):
    config = {"merge_method": "linear", "models": [{"model": models["a"]}, {"model": models["b"]}]}
    merge(tmp_path, config)
    with pytest.raises(StropError, match="already exists"):
        merge(tmp_path, config)
    bad = {
        **config,
        "models": [
            {"model": models["a"], "parameters": {"weight": 1}},
            {"model": models["b"], "parameters": {"weight": -1}},
        ],
    }
    with pytest.raises(StropError, match="sum to zero"):
        merge(tmp_path, bad, overwrite=True)
    assert (tmp_path / "out" / "model.safetensors").is_file()  # the earlier result is untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_command_parses_and_runs(tmp_path, models, capsys):
    from strop.commands import merge as command

    parser = argparse.ArgumentParser(prog="strop")
    command.add_parser(parser.add_subparsers(dest="command", required=True))
    config = write_config(
        tmp_path,
        {
            "merge_method": "model_soup",
            "models": [{"model": models["a"]}, {"model": models["b"]}],
            "output_dir": tmp_path / "from_config",
        },
    )
    args = parser.parse_args(["merge", str(config), "--no-progress"])
    assert args.func(args) == 0
    assert (tmp_path / "from_config" / "model.safetensors").is_file()
    args = parser.parse_args(["merge", str(config), "--out", str(tmp_path / "explicit"), "--no-progress"])
    assert args.func(args) == 0 and "explicit" in capsys.readouterr().out
    no_out = write_config(tmp_path, {"merge_method": "model_soup", "models": [{"model": models["a"]}]}, "n.yml")
    args = parser.parse_args(["merge", str(no_out)])
    with pytest.raises(StropError, match="--out"):
        args.func(args)
