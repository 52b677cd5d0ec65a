"""LoRA experts on a dense model: batched math against an expert-by-expert reference, merge when k = all,
save/load round trip, and the strategy through `strop train`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from strop.errors import StropError
from strop.moe import lora_experts


def reference(layer: lora_experts.LoraExpertsLinear, x: torch.Tensor) -> torch.Tensor:
    """y = W x + b + (α/r) Σ_e g_e(x) B_e A_e x, one expert at a time, gates recomputed by hand."""
    out = F.linear(x, layer.base.weight, layer.base.bias)
    num_experts = layer.lora_A.shape[0]
    if layer.router is not None:
        probs = (x @ layer.router.weight.T).softmax(-1)
        top, index = probs.topk(layer.top_k, dim=-1)
        gates = torch.zeros_like(probs).scatter(-1, index, top)
    else:
        gates = torch.ones(*x.shape[:-1], num_experts)
    for e in range(num_experts):
        out = out + layer.scale * gates[..., e : e + 1] * (x @ layer.lora_A[e].T @ layer.lora_B[e].T)
    return out


def trained_layer(top_k: int, experts: int = 3) -> lora_experts.LoraExpertsLinear:
    torch.manual_seed(0)
    layer = lora_experts.LoraExpertsLinear(torch.nn.Linear(7, 5), experts, top_k, r=2, alpha=4)  # odd widths
    with torch.no_grad():
        layer.lora_B.normal_()  # B = 0 at start would hide every error
    return layer


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_batched_matches_expert_by_expert(top_k):
    layer = trained_layer(top_k)
    x = torch.randn(2, 5, 7, requires_grad=True)
    torch.testing.assert_close(layer(x), reference(layer, x))
    layer(x).sum().backward()
    assert layer.lora_B.grad.abs().sum() > 0 and x.grad.abs().sum() > 0
    if top_k < 3:
        assert layer.router.weight.grad.abs().sum() > 0  # the router learns through the gate values


def test_merge_when_every_expert_is_on():
    model = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    lora_experts.add_lora_experts(model, "all-linear", experts=3, top_k=0, r=2, alpha=4)
    with torch.no_grad():
        for layer in lora_experts.layers(model).values():
            layer.lora_B.normal_()
    x = torch.randn(4, 7)
    unmerged = model(x)
    merged = lora_experts.merge(model)
    assert not lora_experts.layers(merged) and isinstance(merged[0], torch.nn.Linear)
    torch.testing.assert_close(merged(x), unmerged)


def test_routed_experts_refuse_to_merge():
    with pytest.raises(StropError, match="no dense weight equals it"):
        trained_layer(top_k=2).delta_weight()


def test_save_load_round_trip(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    lora_experts.add_lora_experts(model, ["q_proj", "down_proj"], experts=4, top_k=2, r=2, alpha=4)
    with torch.no_grad():
        for layer in lora_experts.layers(model).values():
            layer.lora_B.normal_(std=0.1)
    ids = torch.tensor([[5, 9, 3, 17, 8]])
    expected = model(input_ids=ids).logits
    lora_experts.save(model, tmp_path, str(tiny_model))
    reloaded = lora_experts.load(AutoModelForCausalLM.from_pretrained(tiny_model), tmp_path)
    torch.testing.assert_close(reloaded(input_ids=ids).logits, expected)
    with lora_experts.adapters_disabled(reloaded):
        plain = AutoModelForCausalLM.from_pretrained(tiny_model)(input_ids=ids).logits
        torch.testing.assert_close(reloaded(input_ids=ids).logits, plain)


def test_trains_through_strop(make_config, monkeypatch, tmp_path):
    from strop.config import load_config
    from strop.train import loop

    monkeypatch.setattr(loop, "plot_losses", lambda *a, **k: None)
    out = loop.train(
        *load_config(
            make_config(adapter="moe_lora", moe_lora_experts=3, moe_lora_top_k=1, max_steps=2, learning_rate=5e-2)
        )
    )
    assert (out / lora_experts.CONFIG_FILE).is_file() and (out / lora_experts.WEIGHTS_FILE).is_file()
    from strop.models.saved import load_for_chat

    model, tokenizer = load_for_chat(str(out))  # what strop chat / eval load
    assert lora_experts.layers(model)
    ids = torch.tensor([[5, 9, 3]])
    with lora_experts.adapters_disabled(model):
        base = model(input_ids=ids).logits
    assert not torch.allclose(model(input_ids=ids).logits, base)  # the trained experts are back
