"""Slow: merging two SmolLM2-135M-shaped fp32 checkpoints (~540 MB each) stays at a few tensors of RAM.

Skipped unless selected with `-m slow`; run `python -m pytest tests/merge/test_peak_memory.py -m slow -s`
to see the figures (1.5 to 6 minutes on 2 CPU cores). The merge runs in a fresh subprocess that
records its high-water RSS after importing everything and again after merging, so the difference is
what merging itself costs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from merge_helpers import write_config

SMOLLM2_135M = dict(
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    vocab_size=49152,
    tie_word_embeddings=True,
)

MEASURE = """
import json, resource, sys, time
import strop.merge, torch, safetensors, rich  # imports are counted in the baseline

def high_water_kib():
    # VmHWM belongs to this process image only; ru_maxrss also remembers the forked parent's pages.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

baseline = high_water_kib()
start = time.perf_counter()
strop.merge.run_merge(sys.argv[1], sys.argv[2], progress=False)
seconds = time.perf_counter() - start
print(json.dumps({"baseline_kib": baseline, "peak_kib": high_water_kib(), "seconds": seconds}))
"""


def save_smollm2_shaped(folder: Path, seed: int) -> int:
    """A random fp32 model with SmolLM2-135M's shapes; returns its weight-file size in bytes."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(transformers.LlamaConfig(**SMOLLM2_135M))
    model.save_pretrained(folder)
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def measure(config: Path, out: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(config), str(out)], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["linear", "slerp", "ties"])
def test_peak_rss_is_far_below_model_size(tmp_path_factory, request, method):
    markexpr = request.config.getoption("markexpr") or ""
    if "slow" not in markexpr or "not slow" in markexpr:
        pytest.skip("slow (saves two 540 MB models); select with -m slow")
    root = tmp_path_factory.getbasetemp() / "smollm2_shaped"  # shared by the parametrized cases
    if not (root / "b" / "model.safetensors").is_file():
        root.mkdir(exist_ok=True)
        save_smollm2_shaped(root / "a", 1)
        save_smollm2_shaped(root / "b", 2)
    size = (root / "a" / "model.safetensors").stat().st_size
    work = tmp_path_factory.mktemp(method)
    a, b = str(root / "a"), str(root / "b")
    config: dict = {"merge_method": method, "models": [{"model": a}, {"model": b}]}
    if method == "slerp":
        config["parameters"] = {"t": 0.3}
    if method == "ties":
        config.update(base_model=a, models=[{"model": b, "parameters": {"density": 0.5}}])
    figures = measure(write_config(work, config), work / "out")
    merge_mib = (figures["peak_kib"] - figures["baseline_kib"]) / 1024
    print(
        f"\n{method}: model {size / 2**20:.0f} MiB each; baseline RSS {figures['baseline_kib'] / 1024:.0f} MiB, "
        f"peak {figures['peak_kib'] / 1024:.0f} MiB (+{merge_mib:.0f} MiB for merging), {figures['seconds']:.1f} s"
    )
    largest_mib = SMOLLM2_135M["vocab_size"] * SMOLLM2_135M["hidden_size"] * 4 / 2**20  # the embedding
    assert merge_mib < 4 * largest_mib, "peak should be a few of the largest tensor, not whole models"
