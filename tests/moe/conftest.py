"""Tiny random MoE models of the families transformers ships, built locally from configs (no hub).

Each shares the tiny Llama's tokenizer; 2 layers, 64 wide, 4 experts of 32, top-2. Linear layers are at least
64 wide on both sides: bitsandbytes' 4-bit matrix-vector path fails on a 32-wide input (one NF4 block is 64)."""

from __future__ import annotations

from pathlib import Path

import pytest

FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe")


def moe_config(family: str, vocab_size: int, tokens: dict, **overrides):
    from transformers import MixtralConfig, OlmoeConfig, Qwen2MoeConfig, Qwen3MoeConfig

    common = dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=512,
        num_experts_per_tok=2,
        **tokens,
    )
    build = {
        "mixtral": lambda: MixtralConfig(intermediate_size=32, num_local_experts=4, **common),
        "qwen2_moe": lambda: Qwen2MoeConfig(
            intermediate_size=64, moe_intermediate_size=32, num_experts=4, shared_expert_intermediate_size=64, **common
        ),
        "qwen3_moe": lambda: Qwen3MoeConfig(
            intermediate_size=64, moe_intermediate_size=32, num_experts=4, head_dim=16, **common
        ),
        "olmoe": lambda: OlmoeConfig(intermediate_size=32, num_experts=4, **common),
    }[family]
    config = build()
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def build_tiny_moe(folder: Path, tokenizer_folder: Path, family: str, seed: int = 0, **overrides) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_folder)
    tok.save_pretrained(folder)
    tokens = dict(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(moe_config(family, len(tok), tokens, **overrides))
    with torch.no_grad():  # some families start their router at zero (uniform routing): give it a spread
        for name, param in model.named_parameters():
            if name.endswith("mlp.gate.weight"):
                param.normal_(0, 0.5)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_moe_models(tmp_path_factory, tiny_model) -> dict[str, Path]:
    return {
        family: build_tiny_moe(tmp_path_factory.mktemp(f"tiny-{family}"), tiny_model, family) for family in FAMILIES
    }


@pytest.fixture(scope="session", name="moe_config")
def moe_config_fixture():
    """`moe_config(family, vocab_size, special_tokens, **overrides)`: a tiny config of that family."""
    return moe_config


@pytest.fixture(scope="session")
def top1_mixtral(tmp_path_factory, tiny_model) -> Path:
    """A tiny Mixtral with top-1 routing, where an unbalanced router feeds on itself (Switch Transformer)."""
    return build_tiny_moe(tmp_path_factory.mktemp("top1-mixtral"), tiny_model, "mixtral", num_experts_per_tok=1)
