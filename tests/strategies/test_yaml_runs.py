"""Every registered strategy trains SFT from a YAML file through `strop train`, and its artifact loads."""

import pytest

from strop.strategies import STRATEGIES

KEYS = {
    "prompt_tuning": {"num_virtual_tokens": 3},
    "prefix_tuning": {"num_virtual_tokens": 3},
    "p_tuning_v2": {"num_virtual_tokens": 3},
    "spider": {"spider_warmup_steps": 1, "max_steps": 2},
    "galore": {"galore_rank": 4, "galore_update_proj_gap": 1},
    "spectrum": {"spectrum_top_fraction": 0.5},
    "lisa": {"lisa_n_layers": 1, "lisa_step_interval": 1},
}


def test_registry_holds_the_expected_names():
    assert set(STRATEGIES) >= {
        "full",
        "lora",
        "qlora",
        "dora",
        "rslora",
        "ia3",
        "prompt_tuning",
        "prefix_tuning",
        "bitfit",
        "galore",
        "spectrum",
        "lisa",
    }
    assert all(s.name == name for name, s in STRATEGIES.items())


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_strategy_runs_from_yaml(strategy, make_config, tiny_model, tiny_qwen2, monkeypatch):
    if strategy in ("qlora",):
        pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes")
    import torch

    from strop.cli import main
    from strop.models.saved import load_saved
    from strop.train import loop

    monkeypatch.setattr(loop, "plot_losses", lambda *a, **k: None)
    base = tiny_qwen2 if strategy == "bitfit" else tiny_model
    path = make_config(
        adapter=strategy, base_model=str(base), **{"max_steps": 1, "micro_batch_size": 2, **KEYS.get(strategy, {})}
    )
    assert main(["train", str(path)]) == 0
    out = path.parent / "out"
    x = torch.randint(3, 250, (1, 7))
    model, _ = load_saved(out)  # an adapter onto its base, strop's moe_lora format, or a full model
    with torch.no_grad():
        assert torch.isfinite(model.eval()(x).logits).all()
