"""`strop estimate`: meta-device counts equal the real strategies' counts; the memory model is ordered."""

import pytest

from strop.config import load_config
from strop.train.estimate import ALTERNATIVES, estimates_for, shapes_of, skeleton, spectrum_count, trainable_count

CASES = {
    "full": {},
    "lora": {"lora_r": 4},
    "dora": {"lora_r": 4},
    "rslora": {"lora_r": 8},
    "lora-targets": {"adapter": "lora", "lora_target_modules": ["q_proj", "v_proj"]},
    "ia3": {},
    "prompt_tuning": {"num_virtual_tokens": 5},
    "prefix_tuning": {"num_virtual_tokens": 5},
    "p_tuning_v2": {"num_virtual_tokens": 5},
    "houlsby": {"bottleneck_reduction_factor": 8},
    "pfeiffer": {},
    "lisa": {"lisa_n_layers": 1},
    "spectrum": {"spectrum_top_fraction": 0.5},
    "galore": {},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_counts_match_the_applied_strategy(prepared, case):
    overrides = {"adapter": case, **CASES[case]}
    run = prepared(**overrides)
    real, total = run.strategy.count_parameters(run.model)
    model = skeleton(run.cfg)
    assert all(p.device.type == "meta" for p in model.parameters())  # nothing loaded
    shapes = shapes_of(model)
    predicted = (
        spectrum_count(model, run.cfg)
        if run.cfg.strategy == "spectrum"
        else trainable_count(run.cfg.strategy, run.cfg, shapes)
    )
    assert predicted == real
    assert shapes.total == total - (real if run.strategy.adds_parameters else 0)


def test_bitfit_count(prepared, tiny_qwen2):
    run = prepared(adapter="bitfit", base_model=str(tiny_qwen2))
    shapes = shapes_of(skeleton(run.cfg))
    assert trainable_count("bitfit", run.cfg, shapes) == run.strategy.count_parameters(run.model)[0]


def test_memory_model_orders_strategies(make_config):
    cfg, _ = load_config(make_config(adapter="lora", lora_r=4, galore_rank=8, micro_batch_size=2, sequence_len=64))
    rows = {r.strategy: r for r in estimates_for(cfg)[0]}
    assert list(rows) == ["lora", *(s for s in ALTERNATIVES if s != "lora")]
    full, lora, qlora, galore = rows["full"], rows["lora"], rows["qlora"], rows["galore"]
    assert full.weights == 4 * full.total and full.gradients == 4 * full.total and full.optimizer == 8 * full.total
    assert qlora.weights < lora.weights and lora.peak < full.peak and galore.optimizer < full.optimizer
    assert lora.activations == full.activations < rows["dora"].activations


def test_gradient_checkpointing_shrinks_activations(make_config):
    plain = estimates_for(load_config(make_config(adapter="full"))[0])[0][0]
    checkpointed = estimates_for(load_config(make_config(adapter="full", gradient_checkpointing=True))[0])[0][0]
    assert checkpointed.activations < plain.activations


def test_command_prints_the_table(make_config, capsys):
    from strop.cli import main

    assert main(["estimate", str(make_config(adapter="dora", lora_r=4))]) == 0
    out = capsys.readouterr().out
    for name in ("dora (configured)", "full", "lora", "qlora", "galore", "optimizer", "activations"):
        assert name in out
