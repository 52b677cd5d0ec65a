"""`strop estimate` knows expert-aware LoRA: its meta-device count equals the applied adapter's."""

from __future__ import annotations

import pytest

from strop.config import load_config
from strop.train.estimate import shapes_of, skeleton, trainable_count

SELECTIONS = [["attention"], ["attention", "shared_experts"], ["experts"], ["attention", "experts", "router"]]


@pytest.mark.parametrize("parts", SELECTIONS, ids="+".join)
@pytest.mark.parametrize("family", ["qwen2_moe", "mixtral"])
def test_lora_count_matches_applied(make_config, tiny_moe_models, family, parts):
    from strop.train.loop import prepare

    cfg, base = load_config(make_config(base_model=str(tiny_moe_models[family]), moe_lora_targets=parts))
    run = prepare(cfg, base)
    run.model = run.strategy.apply(run.model, cfg)
    real, _ = run.strategy.count_parameters(run.model)
    assert trainable_count("lora", cfg, shapes_of(skeleton(cfg))) == real


def test_router_and_experts_cost_what_they_should(make_config, tiny_moe_models):
    """By hand for the tiny Mixtral (2 layers, E = 4, h = 64, f = 32, r = 4): experts r·E·((h + 2f) + (f + h))
    per layer, routers E·h per layer."""
    cfg, _ = load_config(
        make_config(base_model=str(tiny_moe_models["mixtral"]), moe_lora_targets=["experts", "router"])
    )
    assert trainable_count("lora", cfg, shapes_of(skeleton(cfg))) == 2 * (4 * 4 * ((64 + 64) + (32 + 64)) + 4 * 64)


@pytest.mark.parametrize("top_k", [2, 0])
def test_moe_lora_count_matches_applied(make_config, top_k):
    from strop.train.loop import prepare

    cfg, base = load_config(
        make_config(
            adapter="moe_lora", moe_lora_experts=3, moe_lora_top_k=top_k, lora_target_modules=["q_proj", "down_proj"]
        )
    )
    run = prepare(cfg, base)
    run.model = run.strategy.apply(run.model, cfg)
    real, _ = run.strategy.count_parameters(run.model)
    assert trainable_count("moe_lora", run.cfg, shapes_of(skeleton(run.cfg))) == real
