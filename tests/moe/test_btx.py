"""`strop moe build` (Branch-Train-MiX): experts are the fine-tunes' FFNs, the rest is averaged, the
checkpoint loads in transformers, identical experts reproduce the dense model, routers then train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from strop.cli import main


def fine_tune(tiny_model: Path, folder: Path, seed: int) -> Path:
    """A stand-in fine-tune: the seed with every weight nudged (FFN and attention alike)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    return folder


def write_build(tmp_path: Path, base: Path, experts: list[Path], **keys) -> Path:
    cfg = {
        "base_model": str(base),
        "gate_mode": "hidden",
        "experts_per_token": 2,
        "experts": [
            {"source_model": str(e), "positive_prompts": [f"Say {w} please" for w in ("fox", "dog")[i % 2 :]]}
            for i, e in enumerate(experts)
        ],
        **keys,
    }
    path = tmp_path / "moe.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_experts_are_the_fine_tunes_and_the_rest_is_averaged(tiny_model, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    tunes = [fine_tune(tiny_model, tmp_path / f"ft{i}", i) for i in range(3)]
    assert main(["moe", "build", str(write_build(tmp_path, tiny_model, tunes)), str(tmp_path / "moe")]) == 0
    moe = AutoModelForCausalLM.from_pretrained(tmp_path / "moe")
    assert type(moe).__name__ == "MixtralForCausalLM" and moe.config.num_local_experts == 3
    dense = [load_file(t / "model.safetensors") for t in tunes]
    experts = moe.model.layers[1].mlp.experts
    for e, state in enumerate(dense):
        gate, up, down = (state[f"model.layers.1.mlp.{p}_proj.weight"] for p in ("gate", "up", "down"))
        fused = experts.gate_up_proj[e] if hasattr(experts, "gate_up_proj") else None
        if fused is not None:  # transformers 5.x fuses the published layout on load
            torch.testing.assert_close(fused, torch.cat([gate, up]))
            torch.testing.assert_close(experts.down_proj[e], down)
    mean_q = torch.stack([s["model.layers.0.self_attn.q_proj.weight"] for s in dense]).mean(0)
    torch.testing.assert_close(moe.model.layers[0].self_attn.q_proj.weight, mean_q)
    router = moe.model.layers[0].mlp.gate.weight
    torch.testing.assert_close(router.norm(dim=-1), torch.ones(3))  # unit-norm hidden-state prototypes


def test_identical_experts_reproduce_the_dense_model(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    assert (
        main(
            [
                "moe",
                "build",
                str(write_build(tmp_path, tiny_model, [tiny_model, tiny_model], gate_mode="random")),
                str(tmp_path / "moe"),
            ]
        )
        == 0
    )
    ids = torch.tensor([[5, 9, 3, 17, 8, 2]])
    dense = AutoModelForCausalLM.from_pretrained(tiny_model)(input_ids=ids).logits
    moe = AutoModelForCausalLM.from_pretrained(tmp_path / "moe")(input_ids=ids).logits
    torch.testing.assert_close(moe, dense, atol=1e-5, rtol=1e-5)


def test_router_training_runs_through_strop_train(tiny_model, tmp_path, make_config, monkeypatch):
    from strop.train import loop

    monkeypatch.setattr(loop, "plot_losses", lambda *a, **k: None)
    tunes = [fine_tune(tiny_model, tmp_path / f"ft{i}", i) for i in range(2)]
    assert main(["moe", "build", str(write_build(tmp_path, tiny_model, tunes)), str(tmp_path / "moe")]) == 0
    assert (
        main(
            [
                "train",
                str(
                    make_config(base_model=str(tmp_path / "moe"), moe_lora_targets=["attention", "router"], max_steps=2)
                ),
            ]
        )
        == 0
    )
    adapter = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert any(m.endswith("mlp.gate") for m in adapter["modules_to_save"])


def test_bad_config_names_the_field(tiny_model, tmp_path, capsys):
    path = write_build(tmp_path, tiny_model, [tiny_model, tiny_model])
    cfg = yaml.safe_load(path.read_text())
    cfg["experts"][1]["positive_prompts"] = []
    path.write_text(yaml.safe_dump(cfg))
    assert main(["moe", "build", str(path), str(tmp_path / "moe")]) != 0
    assert "experts[1].positive_prompts" in capsys.readouterr().err
    assert not (tmp_path / "moe").exists()


@pytest.mark.parametrize(
    "key,value,message", [("experts_per_token", 3, "experts_per_token 3 > 2"), ("gate_mode", "cheap", "gate_mode")]
)
def test_bad_values(tiny_model, tmp_path, capsys, key, value, message):
    path = write_build(tmp_path, tiny_model, [tiny_model, tiny_model], **{key: value})
    assert main(["moe", "build", str(path), str(tmp_path / "moe")]) != 0
    assert message in capsys.readouterr().err
