"""GGUF export of the Qwen2-MoE, Qwen3-MoE and OLMoE families, checked against both llama.cpp oracles:

- its own converter (convert_hf_to_gguf.py, as tests/parity runs it) on the same tiny model must write the
  same tensors (names, types, shapes, bytes) and the same arch metadata;
- its runtime (llama-cpp-python) must load strop's file and give transformers' logits.

The tiny models are random, 2 layers, 4 experts (top 2), on SmolLM2's tokenizer, with routers scaled up
so that tokens spread over the experts. Qwen2-MoE carries a shared expert and its sigmoid gate; Qwen3-MoE
renormalises the top-k weights (llama.cpp's qwen3moe always does); OLMoE has no grouped-query attention
(llama.cpp's olmoe sizes its k-norm for full multi-head attention).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _export_llamacpp import (
    CONVERTER,
    HELD_OUT_TEXT,
    argmax_agreement,
    hf_logits,
    llama_logits,
    load_llama,
    read_gguf,
)

from strop.errors import StropError
from strop.export.gguf_export import export_gguf

FAMILIES = ("qwen2_moe", "qwen3_moe", "olmoe")
ARCH = {"qwen2_moe": "qwen2moe", "qwen3_moe": "qwen3moe", "olmoe": "olmoe"}
# general.* names each tool derives its own way; tokenizer flags strop writes from the tokenizer's files
# where the converter leaves them out for these arches; the pre-tokenizer's name (tests/parity says why)
NOT_COMPARED = {
    "general.name",
    "general.basename",
    "general.size_label",
    "general.finetune",
    "general.version",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_eos_token",
    "tokenizer.ggml.add_space_prefix",
    "tokenizer.ggml.pre",
}


def _config(family: str):
    from transformers import OlmoeConfig, Qwen2MoeConfig, Qwen3MoeConfig

    common = dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=49152,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        num_experts=4,
        num_experts_per_tok=2,
        initializer_range=0.06,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    if family == "qwen2_moe":
        config = Qwen2MoeConfig(
            num_key_value_heads=2,
            intermediate_size=96,
            moe_intermediate_size=32,
            shared_expert_intermediate_size=48,
            rope_theta=1000000.0,
            **common,
        )
    elif family == "qwen3_moe":
        config = Qwen3MoeConfig(
            num_key_value_heads=2,
            head_dim=16,
            intermediate_size=96,
            moe_intermediate_size=32,
            norm_topk_prob=True,
            **common,
        )
    else:
        config = OlmoeConfig(num_key_value_heads=4, intermediate_size=32, **common)
    config.architectures = [type(config).__name__.replace("Config", "ForCausalLM")]
    return config


@pytest.fixture(scope="module", params=FAMILIES)
def tiny_moe(request, smol_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp(f"tiny-{request.param}-gguf")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(request.param), dtype=torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("mlp.gate.weight"):
                param.normal_(0, 0.5)  # a spread of routing choices
            elif name.endswith(("_proj.bias", "_norm.weight")):
                param.normal_(1.0 if "norm" in name else 0.0, 0.1)  # HF starts them at 1 / 0
    model.save_pretrained(str(out))
    for item in smol_tokenizer_dir.iterdir():
        shutil.copy(item, out / item.name)
    return request.param, out


@pytest.mark.slow
@pytest.mark.skipif(not CONVERTER.is_file(), reason=f"llama.cpp's converter is not at {CONVERTER} (make test)")
def test_same_file_as_llamacpp_converter(tiny_moe: tuple[str, Path], tmp_path: Path) -> None:
    family, model_dir = tiny_moe
    theirs = tmp_path / "llamacpp.gguf"
    run = subprocess.run(
        [sys.executable, str(CONVERTER), str(model_dir), "--outtype", "f32", "--outfile", str(theirs)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (our_kv, ours), (their_kv, theirs_t) = (
        read_gguf(export_gguf(model_dir, tmp_path / "strop.gguf", "f32", False)),
        read_gguf(theirs),
    )
    assert our_kv["general.architecture"] == ARCH[family]
    assert sorted(ours) == sorted(theirs_t)
    for name, (kind, shape, data) in theirs_t.items():
        assert ours[name][:2] == (kind, shape), name
        assert np.array_equal(ours[name][2], data), name
    assert ours["blk.0.ffn_gate_exps.weight"][1][-1] == 4  # experts are the outermost GGUF dimension
    arch, n_head_dim = ARCH[family], 64 // 4
    # strop writes these with the values llama.cpp derives when they are absent, where the converter omits them
    explicit = {
        f"{arch}.attention.key_length": n_head_dim,
        f"{arch}.attention.value_length": n_head_dim,
        f"{arch}.rope.dimension_count": n_head_dim,
        f"{arch}.vocab_size": len(their_kv["tokenizer.ggml.tokens"]),
    }
    for key, value in explicit.items():
        assert our_kv[key] == value and their_kv.get(key, value) == value, key
    keys = (set(our_kv) | set(their_kv)) - NOT_COMPARED - set(explicit)
    differ = {k: (our_kv.get(k), their_kv.get(k)) for k in sorted(keys) if our_kv.get(k) != their_kv.get(k)}
    assert not differ
    assert our_kv[f"{arch}.expert_count"] == 4 and our_kv[f"{arch}.expert_used_count"] == 2


@pytest.mark.slow
def test_llama_cpp_runs_the_exported_moe(tiny_moe: tuple[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    family, model_dir = tiny_moe
    path = export_gguf(model_dir, tmp_path / "moe.gguf", "f32", show_progress=False)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    ids = AutoTokenizer.from_pretrained(str(model_dir))(HELD_OUT_TEXT, add_special_tokens=False)["input_ids"]
    ref, got = hf_logits(model, ids), llama_logits(load_llama(path), ids)
    rel_err = float(np.abs(ref - got).max() / ref.std())
    print(f"\ntiny {family} f32: agreement {argmax_agreement(ref, got):.3f}, max |diff| / std {rel_err:.2e}")
    assert argmax_agreement(ref, got) >= 0.99 and rel_err < 1e-3


@pytest.mark.slow
def test_fused_experts_export_like_per_expert_ones(tiny_moe: tuple[str, Path], tmp_path: Path) -> None:
    """transformers 5 holds a layer's experts as 3-D `experts.gate_up_proj` / `experts.down_proj`; a
    checkpoint saved in that layout (state_dict written as is) exports to the same GGUF bytes."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    _, model_dir = tiny_moe
    fused = tmp_path / "fused"
    shutil.copytree(model_dir, fused)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    assert any(k.endswith("experts.gate_up_proj") for k in state)
    save_file(state, str(fused / "model.safetensors"), metadata={"format": "pt"})
    _, per_expert = read_gguf(export_gguf(model_dir, tmp_path / "a.gguf", "f32", False))
    _, from_fused = read_gguf(export_gguf(fused, tmp_path / "b.gguf", "f32", False))
    assert sorted(per_expert) == sorted(from_fused)
    for name, (kind, shape, data) in per_expert.items():
        assert from_fused[name][:2] == (kind, shape) and np.array_equal(from_fused[name][2], data), name


@pytest.mark.parametrize(
    ("family", "change", "message"),
    [
        ("qwen3_moe", {"norm_topk_prob": False}, "always renormalises"),
        ("qwen2_moe", {"norm_topk_prob": True}, "never renormalises"),
        ("qwen2_moe", {"mlp_only_layers": [1]}, "some layers are dense"),
        ("olmoe", {"num_key_value_heads": 2}, "num_key_value_heads=2"),
    ],
)
def test_configs_llamacpp_would_run_differently_are_refused(family, change, message) -> None:
    from strop.export.gguf_arch import arch_spec

    config = {**_config(family).to_dict(), **change}
    with pytest.raises(StropError, match=message):
        arch_spec(config)
