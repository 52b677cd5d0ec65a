"""BitFit (biases only) and LISA (embeddings + head + γ sampled layers)."""

import pytest
import torch

from strop.config import load_config
from strop.errors import StropError
from strop.train.loop import prepare, train_step


def test_bitfit_refuses_a_model_without_biases(make_config):
    cfg, base = load_config(make_config(adapter="bitfit"))
    run = prepare(cfg, base)
    with pytest.raises(StropError, match="no biases"):
        run.strategy.apply(run.model, cfg)


def test_bitfit_trains_only_biases(prepared, tiny_qwen2):
    run = prepared(adapter="bitfit", base_model=str(tiny_qwen2), max_grad_norm=None)
    params = run.strategy.trainable_parameters(run.model)
    assert params and all(name.endswith(".bias") for name in params)
    assert {n.split(".")[-2] for n in params} == {"q_proj", "k_proj", "v_proj"}  # Qwen2's biases
    before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    optimizer = run.strategy.build_optimizer(run.model, run.cfg, run.device)
    train_step(run, 0, optimizer, None, None)
    changed = {n for n, p in run.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == set(params)


def test_lisa_layers_are_a_pure_function_of_seed_and_period(make_config):
    from strop.strategies.lisa import active_layers

    cfg, _ = load_config(make_config(adapter="lisa", lisa_n_layers=3, lisa_step_interval=5))
    picks = [tuple(active_layers(12, cfg, step)) for step in range(40)]
    assert all(len(p) == 3 and len(set(p)) == 3 for p in picks)
    assert all(picks[s] == picks[s - s % 5] for s in range(40))  # constant within a period
    assert len(set(picks[::5])) > 3  # resampled across periods
    assert picks == [tuple(active_layers(12, cfg, step)) for step in range(40)]  # no hidden state
    other, _ = load_config(make_config(adapter="lisa", lisa_n_layers=3, lisa_step_interval=5, seed=2))
    assert [tuple(active_layers(12, other, s)) for s in range(0, 40, 5)] != picks[::5]


def test_lisa_freezes_all_but_sampled_layers_and_keeps_embeddings_head(prepared):
    from strop.strategies.lisa import active_layers

    run = prepared(adapter="lisa", lisa_n_layers=1, lisa_step_interval=1, max_grad_norm=None, seed=5)
    optimizer = run.strategy.build_optimizer(run.model, run.cfg, run.device)
    assert len([p for g in optimizer.param_groups for p in g["params"]]) == len(list(run.model.parameters()))
    for step in range(3):
        run.strategy.on_step_start(run.model, step, run.cfg)
        active = active_layers(2, run.cfg, step)
        before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
        train_step(run, step, optimizer, None, None)
        for name, p in run.model.named_parameters():
            moved = not torch.equal(p, before[name])
            if name.startswith("model.layers."):
                assert moved == (int(name.split(".")[2]) in active), name
            elif "embed_tokens" in name or "lm_head" in name:
                assert moved, name
