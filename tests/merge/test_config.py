"""Config validation: every user mistake is a StropError that names the problem."""

from __future__ import annotations

import pytest
from merge_helpers import write_config

from strop.errors import StropError
from strop.merge.config import load_config, resolve_param
from strop.merge.engine import run_merge


def config_error(tmp_path, config: dict) -> str:
    with pytest.raises(StropError) as err:
        load_config(write_config(tmp_path, config))
    return str(err.value)


def test_unknown_top_level_key_is_named(tmp_path):
    msg = config_error(tmp_path, {"merge_method": "linear", "models": [{"model": "x"}], "tokenizer_sorce": "x"})
    assert "unknown key 'tokenizer_sorce'" in msg


def test_mergekit_slices_get_a_hint(tmp_path):
    msg = config_error(tmp_path, {"merge_method": "linear", "models": [{"model": "x"}], "slices": []})
    assert "slices" in msg and "models:" in msg


def test_unknown_model_key_and_missing_key(tmp_path):
    msg = config_error(tmp_path, {"merge_method": "linear", "models": [{"model": "x", "wieght": 1}]})
    assert "models.0.wieght" in msg
    assert "missing required key 'models'" in config_error(tmp_path, {"merge_method": "linear"})


def test_unknown_method_lists_choices(tmp_path):
    msg = config_error(tmp_path, {"merge_method": "frankenmerge", "models": [{"model": "x"}]})
    assert "frankenmerge" in msg and "ties" in msg and "slerp" in msg


def test_parameter_not_taken_by_method_is_named(tmp_path):
    msg = config_error(tmp_path, {"merge_method": "linear", "models": [{"model": "x", "parameters": {"density": 0.5}}]})
    assert "'density'" in msg and "linear" in msg
    msg = config_error(tmp_path, {"merge_method": "model_soup", "models": [{"model": "x"}], "parameters": {"t": 1}})
    assert "'t'" in msg


def test_slerp_requires_t_in_range(tmp_path):
    models = [{"model": "x"}, {"model": "y"}]
    assert "needs `parameters: {t:" in config_error(tmp_path, {"merge_method": "slerp", "models": models})
    bad = {"merge_method": "slerp", "models": models, "parameters": {"t": [{"filter": "mlp", "value": 1.5}]}}
    assert "[0, 1]" in config_error(tmp_path, bad)


def test_density_range(tmp_path):
    config = {"merge_method": "dare_ties", "base_model": "b", "models": [{"model": "x", "parameters": {"density": 0}}]}
    assert "(0, 1]" in config_error(tmp_path, config)
    config["merge_method"] = "ties"
    config["models"][0]["parameters"]["density"] = 1.2
    assert "[0, 1]" in config_error(tmp_path, config)


def test_bad_dtype_and_bad_yaml(tmp_path):
    assert "dtype" in config_error(tmp_path, {"merge_method": "linear", "models": [{"model": "x"}], "dtype": "int8"})
    path = tmp_path / "broken.yml"
    path.write_text("merge_method: [linear\n")
    with pytest.raises(StropError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(StropError, match="not found"):
        load_config(tmp_path / "absent.yml")


def test_mergekit_int8_mask_is_accepted(tmp_path):
    config = {"merge_method": "ties", "base_model": "b", "models": [{"model": "x"}], "parameters": {"int8_mask": True}}
    assert load_config(write_config(tmp_path, config)).parameters["int8_mask"] is True


def test_filtered_values_pick_first_match(tmp_path):
    config = load_config(
        write_config(
            tmp_path,
            {
                "merge_method": "slerp",
                "models": [{"model": "x"}, {"model": "y"}],
                "parameters": {
                    "t": [{"filter": "self_attn", "value": 0.3}, {"filter": "mlp", "value": 0.7}, {"value": 0.5}]
                },
            },
        )
    )
    t = config.parameters["t"]
    assert resolve_param(t, "model.layers.0.self_attn.q_proj.weight") == 0.3
    assert resolve_param(t, "model.layers.0.mlp.up_proj.weight") == 0.7
    assert resolve_param(t, "model.norm.weight") == 0.5
    with pytest.raises(StropError, match="without `filter`"):
        resolve_param(t[:1], "model.norm.weight", "t")


def test_missing_model_folder_is_clear(tmp_path, models):
    config = write_config(
        tmp_path, {"merge_method": "linear", "models": [{"model": models["a"]}, {"model": "nope/absent"}]}
    )
    with pytest.raises(StropError, match="model folder not found: 'nope/absent'"):
        run_merge(config, tmp_path / "out", progress=False)


def test_folder_without_weights_is_clear(tmp_path, models):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    config = write_config(tmp_path, {"merge_method": "linear", "models": [{"model": models["a"]}, {"model": empty}]})
    with pytest.raises(StropError, match="no model.safetensors"):
        run_merge(config, tmp_path / "out", progress=False)


def test_task_methods_need_base_and_models(tmp_path, models):
    config = write_config(tmp_path, {"merge_method": "ties", "models": [{"model": models["a"]}]})
    with pytest.raises(StropError, match="needs `base_model:`"):
        run_merge(config, tmp_path / "out", progress=False)
    config = write_config(
        tmp_path, {"merge_method": "ties", "base_model": models["base"], "models": [{"model": models["base"]}]}
    )
    with pytest.raises(StropError, match="besides the base model, got 0"):
        run_merge(config, tmp_path / "out", progress=False)


def test_corrupt_weights_are_a_user_error(tmp_path, models):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    config = write_config(tmp_path, {"merge_method": "linear", "models": [{"model": models["a"]}, {"model": broken}]})
    with pytest.raises(StropError, match="cannot read .*model.safetensors"):
        run_merge(config, tmp_path / "out", progress=False)
