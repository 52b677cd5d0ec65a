"""Tiny random Llama / Qwen2 models on SmolLM2's tokenizer, for the export tests and the GGUF parity test.

A uniquely named module (not conftest) so tests/parity can import it too.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def make_tiny_model(arch: str, tokenizer_dir: Path, out: Path, tied: bool = False, seed: int = 0) -> Path:
    """A random 2-layer model with SmolLM2's 49152-token vocab, saved as an HF folder.

    hidden_size 256 so that K-quants get whole 256-wide super-blocks; initializer_range 0.06 so the
    logits have a spread (with the default 0.02 nearly all 49k logits tie and argmax is noise).
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    common = dict(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=49152,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tied,
        initializer_range=0.06,
        bos_token_id=1,
        eos_token_id=2,
    )
    if arch == "llama":
        config = LlamaConfig(rope_theta=100000.0, **common)
    else:
        config = Qwen2Config(rope_theta=1000000.0, **common)
    config.architectures = ["LlamaForCausalLM" if arch == "llama" else "Qwen2ForCausalLM"]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if arch == "qwen2":  # HF initialises biases to zero; random ones exercise the bias tensors
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.1)
    model.save_pretrained(str(out))
    for item in tokenizer_dir.iterdir():
        shutil.copy(item, out / item.name)
    return out
