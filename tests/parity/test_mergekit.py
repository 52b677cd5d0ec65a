"""Every strop merge method against mergekit on the same YAML and the same tiny checkpoints.

Deterministic methods must give mergekit's tensors (float32 files: atol 1e-6, rtol 1e-5). DARE draws its
masks from different generators in the two tools, so at density < 1 the comparison is statistical: the
share of task-vector entries kept and the factor the survivors are scaled by. strop scales by 1/density
(the paper), mergekit 0.1.5 by the L1-norm ratio, which must come out near 1/density on real-sized tensors.
"""

from __future__ import annotations

import pytest
import torch
import yaml
from merge_helpers import load_state, write_config

from strop.merge import run_merge

REASON = "mergekit is a test-only reference: `make test` installs it"
mergekit_merge = pytest.importorskip("mergekit.merge", reason=REASON)
mergekit_config = pytest.importorskip("mergekit.config", reason=REASON)

TASK = ("base", [("a", {"weight": 0.8}), ("b", {"weight": -0.4})])
CASES = {
    # name: (strop method, mergekit method, base, models with parameters, global parameters)
    "linear": ("linear", "linear", None, [("a", {"weight": 0.3}), ("b", {"weight": 0.9})], {}),
    "model_soup": ("model_soup", "linear", None, [("a", {}), ("b", {})], {}),  # mergekit: linear, equal weights
    "slerp": ("slerp", "slerp", "a", [("a", {}), ("b", {})], {"t": 0.3}),
    "task_arithmetic": ("task_arithmetic", "task_arithmetic", *TASK, {"lambda": 1.5}),
    "ties": (
        "ties",
        "ties",
        "base",
        [("a", {"weight": 0.6, "density": 0.4}), ("b", {"weight": 1.0, "density": 0.7})],
        {},
    ),
    "ties_unnormalized": (
        "ties",
        "ties",
        "base",
        [("a", {"weight": 0.6, "density": 0.5}), ("b", {"weight": 1.0, "density": 0.8})],
        {"normalize": False},
    ),
    "dare_linear": ("dare_linear", "dare_linear", *TASK, {"lambda": 0.7}),
    "dare_ties": ("dare_ties", "dare_ties", "base", [("a", {"weight": 0.6}), ("b", {"weight": 1.0})], {}),
}


def both(
    tmp_path, merge_models, strop_method: str, mergekit_method: str, base, models, parameters
) -> tuple[dict, dict]:
    """Run the same config through strop and mergekit; returns (strop's tensors, mergekit's tensors)."""
    config = {
        "merge_method": strop_method,
        "models": [{"model": str(merge_models[m]), "parameters": p} for m, p in models],
        "dtype": "float32",
        "seed": 3,
    }
    if base:
        config["base_model"] = str(merge_models[base])
    if parameters:
        config["parameters"] = parameters
    ours = load_state(run_merge(write_config(tmp_path, config), tmp_path / "strop", progress=False))
    config["merge_method"] = mergekit_method
    del config["seed"]
    if strop_method == "model_soup":
        config["models"] = [{"model": item["model"], "parameters": {"weight": 1.0}} for item in config["models"]]
    path = write_config(tmp_path, config, "mergekit.yml")
    options = mergekit_merge.MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True, random_seed=3)
    mk_config = mergekit_config.MergeConfiguration.model_validate(yaml.safe_load(path.read_text()))
    mergekit_merge.run_merge(mk_config, str(tmp_path / "mergekit"), options)
    return ours, load_state(tmp_path / "mergekit")


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_mergekit(tmp_path, merge_models, case):
    """dare_* at their defaults (density 1): the normalisation default must be mergekit's (issue #22)."""
    ours, theirs = both(tmp_path, merge_models, *CASES[case])
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.allclose(ours[name], theirs[name], atol=1e-6, rtol=1e-5), name


def test_dare_drop_statistics_match_mergekit(tmp_path, merge_models):
    """One model, density 0.4: both keep ~40 % of the task vector and scale survivors by ~1/0.4."""
    density = 0.4
    ours, theirs = both(
        tmp_path, merge_models, "dare_linear", "dare_linear", "base", [("a", {"weight": 1.0, "density": density})], {}
    )
    base, tuned = load_state(merge_models["base"]), load_state(merge_models["a"])
    stats = {}
    for tool, state in (("strop", ours), ("mergekit", theirs)):
        kept = total = 0
        factors = []
        for name, merged in state.items():
            delta, out = tuned[name] - base[name], merged - base[name]
            survivors = out != 0
            kept, total = kept + int(survivors.sum()), total + out.numel()
            if out.numel() >= 4096:  # a norm ratio is only near 1/density on a tensor of some size
                factors.append(float(out[survivors].abs().sum() / delta[survivors].abs().sum()))
        stats[tool] = (kept / total, sum(factors) / len(factors), min(factors), max(factors))
    for share, mean_factor, low, high in stats.values():
        assert abs(share - density) < 0.01, stats
        assert abs(mean_factor - 1 / density) < 0.05 and low > 2.3 and high < 2.7, stats
    assert stats["strop"][2] == pytest.approx(1 / density, rel=1e-6)  # exactly 1/density, tensor by tensor
