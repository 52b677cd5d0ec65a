"""Bottleneck adapters (Houlsby, Pfeiffer) and P-Tuning v2 beside prefix tuning."""

import pytest
import torch

from strop.errors import StropError

IDS = torch.randint(3, 250, (2, 9), generator=torch.Generator().manual_seed(0))


def _logits(model, ids=IDS):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def test_adapter_layer_matches_the_formula():
    from strop.models.bottleneck import BottleneckAdapter

    torch.manual_seed(0)
    layer = BottleneckAdapter(12, 4, "gelu")
    h = torch.randn(2, 5, 12)
    assert torch.equal(layer(h), h)  # W_up = 0, b_up = 0: the identity at start
    with torch.no_grad():
        layer.up.weight.normal_()
        layer.up.bias.normal_()
    down, up = layer.down, layer.up
    expected = h + torch.nn.functional.gelu(h @ down.weight.T + down.bias) @ up.weight.T + up.bias
    torch.testing.assert_close(layer(h), expected)
    assert down.weight.shape == (3, 12)  # bottleneck 12 / 4


@pytest.mark.parametrize(("placement", "sublayers"), [("houlsby", {"self_attn", "mlp"}), ("pfeiffer", {"mlp"})])
def test_bottleneck_trains_only_adapters_saves_and_reloads(prepared, tmp_path, placement, sublayers):
    from strop.models import load_model
    from strop.models.saved import load_saved

    run = prepared(adapter=placement, bottleneck_reduction_factor=8, bottleneck_non_linearity="tanh")
    base = _logits(load_model(run.model_path))
    torch.testing.assert_close(_logits(run.model), base)  # near-identity init: exactly the base at start
    trainable = run.strategy.trainable_parameters(run.model)
    assert {n.split(".")[3] for n in trainable} == sublayers and all(".bottleneck_adapter." in n for n in trainable)
    assert len(trainable) == 2 * 4 * len(sublayers)  # 2 layers × (down, up) × (weight, bias) per sublayer
    with torch.no_grad():
        for p in trainable.values():
            p.add_(torch.randn_like(p) * 0.3)
    trained = _logits(run.model)
    assert (trained - base).abs().max() > 1e-3
    with run.strategy.reference_context(run.model):
        torch.testing.assert_close(_logits(run.model), base)
    run.strategy.save(run.model, run.tokenizer, tmp_path)
    assert {p.name for p in tmp_path.glob("bottleneck*")} == {
        "bottleneck_config.json",
        "bottleneck_adapter.safetensors",
    }
    reloaded, _ = load_saved(tmp_path)
    torch.testing.assert_close(_logits(reloaded), trained, rtol=1e-5, atol=1e-5)


def test_merge_lora_refuses_bottleneck_adapters(prepared, tmp_path, tiny_model):
    from strop.export.merge_lora import merge_lora

    run = prepared(adapter="pfeiffer")
    (tmp_path / "adapter").mkdir()
    run.strategy.save(run.model, run.tokenizer, tmp_path / "adapter")
    with pytest.raises(StropError, match="non-linearity .* cannot be merged"):
        merge_lora(tiny_model, tmp_path / "adapter", tmp_path / "merged")


def test_bottleneck_on_the_wrong_base_is_refused(prepared, tmp_path, tiny_qwen2):
    from strop.models import bottleneck, load_model

    run = prepared(adapter="houlsby", bottleneck_reduction_factor=4)
    run.strategy.save(run.model, run.tokenizer, tmp_path)
    other = load_model(str(tiny_qwen2))
    bottleneck.load(other, tmp_path)  # same sizes: fits
    config = tmp_path / bottleneck.CONFIG_FILE
    config.write_text(config.read_text().replace('"reduction_factor": 4', '"reduction_factor": 8'))
    with pytest.raises(StropError, match="does not fit"):
        bottleneck.load(load_model(str(tiny_qwen2)), tmp_path)


def test_prefix_tuning_and_p_tuning_v2_differ_by_reparameterisation(prepared, tmp_path):
    from safetensors.torch import load_file

    n, layers, kv = 3, 2, 32  # the tiny model: 2 layers, 2 KV heads of 16
    prefix = prepared(adapter="prefix_tuning", num_virtual_tokens=n)
    ptv2 = prepared(adapter="p_tuning_v2", num_virtual_tokens=n)
    direct = {name: p.shape for name, p in ptv2.strategy.trainable_parameters(ptv2.model).items()}
    assert list(direct.values()) == [torch.Size([n, layers * 2 * kv])]  # the per-layer keys/values themselves
    through_mlp = prefix.strategy.trainable_parameters(prefix.model)
    assert any("transform" in name for name in through_mlp)  # Li & Liang's Linear-Tanh-Linear
    assert sum(p.numel() for p in through_mlp.values()) == n * kv + (kv + 1) * kv + (kv + 1) * layers * 2 * kv
    for name, run in (("prefix", prefix), ("ptv2", ptv2)):  # the MLP is dropped: one artifact format
        run.strategy.save(run.model, run.tokenizer, tmp_path / name)
        saved = load_file(str(tmp_path / name / "adapter_model.safetensors"))
        assert [t.shape for t in saved.values()] == [torch.Size([n, layers * 2 * kv])]
    flipped = prepared(adapter="p_tuning_v2", num_virtual_tokens=n, prefix_projection=True, prefix_projection_hidden=8)
    assert any("transform" in name for name in flipped.strategy.trainable_parameters(flipped.model))
    plain = prepared(adapter="prefix_tuning", num_virtual_tokens=n, prefix_projection=False)
    assert [p.shape for p in plain.strategy.trainable_parameters(plain.model).values()] == list(direct.values())
