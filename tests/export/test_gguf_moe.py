"""GGUF export of an MoE (Mixtral) that llama.cpp runs: per-expert weights stacked into its
ffn_{gate,up,down}_exps tensors, the router as ffn_gate_inp, expert counts in the metadata; llama.cpp's
f32 logits match transformers' (the same bar as the dense export tests)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from _export_llamacpp import HELD_OUT_TEXT, argmax_agreement, hf_logits, llama_logits, load_llama

from strop.export.gguf_export import export_gguf

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_mixtral(smol_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, MixtralConfig

    out = tmp_path_factory.mktemp("tiny-mixtral-gguf")
    config = MixtralConfig(
        hidden_size=256,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=49152,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        num_local_experts=4,
        num_experts_per_tok=2,
        initializer_range=0.06,
        rope_theta=100000.0,
        bos_token_id=1,
        eos_token_id=2,
        sliding_window=None,
    )
    config.architectures = ["MixtralForCausalLM"]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.gate.weight.normal_(0, 0.5)  # a spread of routing choices
    model.save_pretrained(str(out))
    for item in smol_tokenizer_dir.iterdir():
        shutil.copy(item, out / item.name)
    return out


def test_llama_cpp_runs_the_exported_moe(tiny_mixtral: Path, tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    import gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = export_gguf(tiny_mixtral, tmp_path / "moe.gguf", "f32", show_progress=False)
    reader = gguf.GGUFReader(str(path))
    shapes = {t.name: tuple(int(d) for d in t.shape) for t in reader.tensors}
    assert shapes["blk.0.ffn_gate_exps.weight"] == (256, 256, 4)  # GGUF lists dimensions innermost first
    assert shapes["blk.1.ffn_down_exps.weight"] == (256, 256, 4)
    assert shapes["blk.0.ffn_gate_inp.weight"] == (256, 4)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_mixtral), dtype=torch.float32).eval()
    ids = AutoTokenizer.from_pretrained(str(tiny_mixtral))(HELD_OUT_TEXT, add_special_tokens=False)["input_ids"]
    ref, got = hf_logits(model, ids), llama_logits(load_llama(path), ids)
    rel_err = float(np.abs(ref - got).max() / ref.std())
    print(f"\ntiny Mixtral f32: agreement {argmax_agreement(ref, got):.3f}, max |diff| / std {rel_err:.2e}")
    assert argmax_agreement(ref, got) >= 0.99 and rel_err < 1e-3
