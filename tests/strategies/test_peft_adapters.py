"""DoRA, rsLoRA, IA3, prompt and prefix tuning, P-Tuning v2: PEFT format; trained, reloaded and merged outputs agree."""

import math

import pytest
import torch

IDS = torch.randint(3, 250, (2, 11), generator=torch.Generator().manual_seed(0))
CASES = {  # strategy name and config overrides
    "dora": {"adapter": "dora"},
    "lora+peft_use_dora": {"adapter": "lora", "peft_use_dora": True},
    "rslora": {"adapter": "lora", "peft_use_rslora": True, "lora_r": 16, "lora_alpha": 8},
    "ia3": {"adapter": "ia3"},
    "prompt_tuning": {"adapter": "prompt_tuning", "num_virtual_tokens": 3},
    "prefix_tuning": {"adapter": "prefix_tuning", "num_virtual_tokens": 3},
    "p_tuning_v2": {"adapter": "p_tuning_v2", "num_virtual_tokens": 3},
}
MERGEABLE = {"dora", "lora+peft_use_dora", "rslora", "ia3"}


def _perturbed(prepared, **overrides):
    """An applied strategy whose adapter weights are moved away from their no-op initialisation."""
    run = prepared(**overrides)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in run.strategy.trainable_parameters(run.model).values():
            p.add_(torch.randn_like(p) * 0.3)
    return run


def _logits(model, ids=IDS):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


@pytest.mark.parametrize("case", sorted(CASES))
def test_saved_adapter_reloads_and_merges_identically(prepared, tmp_path, case):
    from peft import PeftModel

    from strop.models import load_model

    run = _perturbed(prepared, **CASES[case])
    trained = _logits(run.model)
    assert trained.shape[:2] == IDS.shape  # prompt tuning's virtual positions are dropped
    base = _logits(load_model(run.model_path))
    assert (trained - base).abs().max() > 1e-3
    run.strategy.save(run.model, run.tokenizer, tmp_path)
    assert (tmp_path / "adapter_config.json").is_file() and (tmp_path / "adapter_model.safetensors").is_file()
    reloaded = PeftModel.from_pretrained(load_model(run.model_path), tmp_path)
    reloaded_logits = _logits(reloaded)
    if reloaded_logits.shape[1] != IDS.shape[1]:  # a plain PeftModel returns the virtual positions too
        reloaded_logits = reloaded_logits[:, -IDS.shape[1] :]
    torch.testing.assert_close(reloaded_logits, trained, rtol=1e-5, atol=1e-5)
    if case in MERGEABLE:
        merged = reloaded.merge_and_unload()
        torch.testing.assert_close(_logits(merged), trained, rtol=1e-4, atol=1e-4)


def test_rslora_scaling_is_alpha_over_sqrt_r(prepared):
    run = prepared(adapter="rslora", lora_r=16, lora_alpha=8)
    layer = run.strategy.base_model(run.model).model.layers[0].self_attn.q_proj
    assert layer.scaling["default"] == pytest.approx(8 / math.sqrt(16))
    plain = prepared(adapter="lora", lora_r=16, lora_alpha=8)
    assert plain.strategy.base_model(plain.model).model.layers[0].self_attn.q_proj.scaling["default"] == 0.5


def test_dora_layer_matches_formula(prepared):
    """W' = m · (W + s B A) / ‖W + s B A‖ (row norms), against PEFT's layer output."""
    run = _perturbed(prepared, adapter="dora")
    layer = run.strategy.base_model(run.model).model.layers[1].mlp.down_proj
    w = layer.base_layer.weight
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    m = layer.lora_magnitude_vector["default"].weight
    adapted = w + layer.scaling["default"] * b @ a
    reference = m.view(-1, 1) * adapted / adapted.norm(dim=1, keepdim=True)
    x = torch.randn(3, 5, w.shape[1])
    layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), x @ reference.T, rtol=1e-4, atol=1e-5)


def test_ia3_scales_start_at_one_and_model_is_unchanged(prepared):
    from strop.models import load_model

    run = prepared(adapter="ia3")
    vectors = run.strategy.trainable_parameters(run.model)
    assert vectors and all(torch.all(v == 1) for v in vectors.values())
    torch.testing.assert_close(_logits(run.model), _logits(load_model(run.model_path)))
