"""Optional: strop's linear / task_arithmetic / ties give mergekit's numbers on the same tiny models.

Skipped unless mergekit is importable (e.g. `pip install --no-deps mergekit immutables`; its other
runtime imports are already strop dependencies). Same YAML is fed to both tools.
"""

from __future__ import annotations

import pytest
import torch
import yaml

from strop.merge import run_merge

from merge_helpers import load_state, write_config

mergekit_merge = pytest.importorskip("mergekit.merge")
mergekit_config = pytest.importorskip("mergekit.config")

CASES = {
    "linear": {
        "merge_method": "linear",
        "models": [("a", {"weight": 0.3}), ("b", {"weight": 0.9})],
        "parameters": {},
    },
    "task_arithmetic": {
        "merge_method": "task_arithmetic",
        "models": [("a", {"weight": 0.8}), ("b", {"weight": -0.4})],
        "parameters": {"lambda": 1.5},
    },
    "ties": {
        "merge_method": "ties",
        "models": [("a", {"weight": 0.6, "density": 0.4}), ("b", {"weight": 1.0, "density": 0.7})],
        "parameters": {"normalize": True},
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_mergekit(tmp_path, models, case):
    spec = CASES[case]
    config = {
        "merge_method": spec["merge_method"],
        "models": [{"model": str(models[m]), "parameters": p} for m, p in spec["models"]],
        "dtype": "float32",
    }
    if spec["merge_method"] != "linear":
        config["base_model"] = str(models["base"])
    if spec["parameters"]:
        config["parameters"] = spec["parameters"]
    path = write_config(tmp_path, config)
    ours = load_state(run_merge(path, tmp_path / "strop", progress=False))

    theirs_dir = tmp_path / "mergekit"
    mk_config = mergekit_config.MergeConfiguration.model_validate(yaml.safe_load(path.read_text()))
    options = mergekit_merge.MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True)
    mergekit_merge.run_merge(mk_config, str(theirs_dir), options)
    theirs = load_state(theirs_dir)

    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.allclose(ours[name], theirs[name], atol=1e-6, rtol=1e-5), name
