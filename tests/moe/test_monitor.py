"""The router monitor on a real (tiny) Mixtral: what it records, and that padding changes nothing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from strop.moe import monitor as moe_monitor
from strop.moe.detect import fused_experts, moe_blocks

CFG = SimpleNamespace(moe_aux_loss_coef=0.5, moe_z_loss_coef=0.25, moe_entropy_warning=0.5)


@pytest.fixture(scope="module")
def mixtral(moe_config):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(moe_config("mixtral", 50, {}))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("mlp.gate.weight"):
                param.normal_(0, 0.5)
    return model.eval()


def recorded(monitor, model, batch, **inputs):
    with monitor.recording(batch):
        model(**inputs)
    return monitor.take(1.0)


def test_detects_blocks(mixtral):
    blocks = moe_blocks(mixtral)
    assert [b.name for b in blocks] == ["model.layers.0.mlp", "model.layers.1.mlp"]
    assert all(b.num_experts == 4 and b.top_k == 2 and b.shared is None and fused_experts(b) for b in blocks)


def test_padding_and_packing_filler_change_nothing(mixtral):
    monitor = moe_monitor.attach(mixtral, CFG)
    try:
        ids = torch.tensor([[5, 9, 3, 17, 8, 2]])
        plain_loss, plain = recorded(monitor, mixtral, {"input_ids": ids}, input_ids=ids)
        plain_health = monitor.finish_step(lambda *a: None)
        padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], dim=1)
        mask = torch.tensor([[1] * 6 + [0] * 3])
        loss, metrics = recorded(
            monitor, mixtral, {"input_ids": padded, "attention_mask": mask}, input_ids=padded, attention_mask=mask
        )
        assert float(loss) == pytest.approx(float(plain_loss), rel=1e-5)
        assert float(metrics["moe_aux_loss"]) == pytest.approx(float(plain["moe_aux_loss"]), rel=1e-5)
        for layer, reference in zip(monitor.finish_step(lambda *a: None)["moe_layers"], plain_health["moe_layers"]):
            assert layer["load"] == reference["load"]
            assert layer["router_entropy"] == pytest.approx(reference["router_entropy"], rel=1e-5)
        segments = torch.tensor([[0, 0, 0, 1, 1, 1, -1, -1, -1]])  # packed row: the forward sees no 2-D mask
        loss, _ = recorded(monitor, mixtral, {"input_ids": padded, "segment_ids": segments}, input_ids=padded)
        assert float(loss) == pytest.approx(float(plain_loss), rel=1e-5)
        assert float(plain_loss) == pytest.approx(
            0.5 * float(plain["moe_aux_loss"]) + 0.25 * float(plain["moe_z_loss"])
        )
    finally:
        monitor.remove()


def test_ignores_passes_without_gradients_or_outside_recording(mixtral):
    monitor = moe_monitor.attach(mixtral, CFG)
    try:
        ids = torch.tensor([[5, 9, 3]])
        mixtral(input_ids=ids)  # not recording
        with monitor.recording({"input_ids": ids}), torch.no_grad():
            mixtral(input_ids=ids)  # a reference pass
        loss, metrics = monitor.take(1.0)
        assert float(loss) == 0.0 and metrics == {}
    finally:
        monitor.remove()


def test_warns_once_per_collapse(mixtral):
    monitor = moe_monitor.attach(mixtral, CFG)
    monitor.remove()
    messages = []
    collapsed, balanced = torch.tensor([30.0, 2.0, 0.0, 0.0]), torch.tensor([8.0, 8.0, 8.0, 8.0])
    for counts in (collapsed, collapsed, balanced, collapsed):
        monitor._add_health(0, counts, torch.tensor(0.0), 16)
        monitor._add_health(1, balanced, torch.tensor(0.0), 16)
        health = monitor.finish_step(messages.append)
    assert health["moe_starved_experts"] == 2 and health["moe_load_entropy_min"] < 0.5
    assert len(messages) == 2 and all(
        "router collapse in MoE layer 0" in m for m in messages
    )  # again only after recovery
