"""`master_weights: bf16`: bf16 weights, gradients and AdamW moments with stochastically rounded updates."""

import shutil

import pytest
import torch
from safetensors.torch import load_file

from strop.config import load_config
from strop.errors import StropError
from strop.kernels.adamw_bf16 import random_bits, stochastic_round_bf16
from strop.strategies.optim import BF16AdamW
from strop.train.estimate import estimate, shapes_of, skeleton
from strop.train.loop import train


def test_stochastic_rounding_is_unbiased_and_lands_on_the_two_neighbours():
    value = torch.tensor(1.0 + 2**-10)  # 1/8 of the way from 1 to the next bf16 value, 1 + 2^-7
    values = value.expand(200_000).contiguous()
    rounded = stochastic_round_bf16(values, random_bits(values, seed=3)).float()
    assert set(rounded.unique().tolist()) == {1.0, 1.0 + 2**-7}
    assert abs(rounded.mean().item() - value.item()) < 2e-5  # 3.4 standard errors (5.8e-6)
    assert (rounded == 1.0 + 2**-7).float().mean().item() == pytest.approx(0.125, abs=0.005)
    negative = stochastic_round_bf16(-values, random_bits(values, seed=4)).float()
    assert abs(negative.mean().item() + value.item()) < 2e-5
    exact = torch.tensor([1.5, -3.0, 0.0]).bfloat16().float()
    assert torch.equal(stochastic_round_bf16(exact, random_bits(exact, seed=5)).float(), exact)


def test_updates_below_bf16_resolution_still_move_the_weight():
    """200 steps of +1e-4 on a weight of 1 (bf16's spacing there is 2^-7 ≈ 7.8e-3): round-to-nearest
    never moves; stochastic rounding moves 0.02 in expectation."""
    start = torch.ones(4096)
    nearest = start.bfloat16()
    stochastic = start.bfloat16()
    for step in range(200):
        nearest = (nearest.float() + 1e-4).bfloat16()
        stochastic = stochastic_round_bf16(stochastic.float() + 1e-4, random_bits(start, seed=step))
    assert torch.equal(nearest, start.bfloat16())
    assert stochastic.float().mean().item() == pytest.approx(1.02, abs=2e-3)


def test_bf16_adamw_follows_fp32_adamw_in_expectation():
    """30 AdamW steps of about lr = 1e-4 each on weights near 1, where bf16's spacing is 40 times larger:
    stochastic rounding keeps the mean progress of fp32 AdamW; round-to-nearest (torch's AdamW on bf16)
    loses most of it."""
    torch.manual_seed(0)
    weight = torch.randn(256, 256)
    settings = dict(lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    reference, param, nearest = (
        torch.nn.Parameter(weight.clone().to(d)) for d in (None, torch.bfloat16, torch.bfloat16)
    )
    optimizers = [
        torch.optim.AdamW([reference], **settings),
        BF16AdamW([param], **settings),
        torch.optim.AdamW([nearest], **settings),
    ]
    direction = torch.randn(256, 256)
    for _ in range(30):
        grad = direction + 0.1 * torch.randn(256, 256)
        for p, opt in zip((reference, param, nearest), optimizers, strict=True):
            p.grad = grad.to(p.dtype)
            opt.step()
    moved = (reference - weight).detach()
    assert moved.abs().mean() > 2e-3

    def progress(p: torch.Tensor) -> float:
        return float(((p.detach().float() - weight) * moved.sign()).mean() / moved.abs().mean())

    assert progress(param) == pytest.approx(1.0, abs=0.05)
    assert progress(nearest) < 0.5
    state = optimizers[1].state[param]
    assert param.dtype == state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.bfloat16


def test_key_is_refused_where_it_does_not_apply(make_config):
    for overrides, message in [
        ({"adapter": "lora"}, "not lora"),
        ({"adapter": "galore"}, "not galore"),
        ({"adapter": "full", "bf16": False}, "set bf16 to true or auto"),
        ({"adapter": "full", "bf16": False, "fp16": True}, "drop fp16"),
        ({"adapter": "full", "bf16": True, "optimizer": "adamw_8bit"}, "keeps states of its own"),
    ]:
        with pytest.raises(StropError, match=message):
            load_config(make_config(master_weights="bf16", **overrides))


def test_estimate_counts_two_bytes_per_weight_gradient_and_moment(make_config):
    cfg, _ = load_config(make_config(adapter="full", bf16=True, master_weights="bf16"))
    fp32, _ = load_config(make_config(adapter="full", bf16=True))
    shapes = shapes_of(skeleton(cfg))
    low, high = estimate("full", cfg, shapes, True), estimate("full", fp32, shapes, True)
    assert (low.weights, low.gradients, low.optimizer) == (2 * shapes.total, 2 * shapes.total, 4 * shapes.total)
    assert (high.weights, high.gradients, high.optimizer) == (4 * shapes.total, 4 * shapes.total, 8 * shapes.total)
    lora = estimate("lora", cfg, shapes, True)  # the alternatives keep their own precision
    assert lora.weights == estimate("lora", fp32, shapes, True).weights


def _losses(path):
    import json

    return [json.loads(line)["loss"] for line in (path / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


def test_full_run_in_bf16_learns_like_fp32_and_resumes_exactly(make_config, tmp_path):
    common = dict(adapter="full", bf16=True, max_steps=8, learning_rate=1e-3, save_steps=4, save_total_limit=3)
    runs = {}
    for key in ("fp32", "bf16"):
        cfg, base = load_config(make_config(master_weights=key, output_dir=str(tmp_path / key), **common))
        train(cfg, base)
        runs[key] = _losses(tmp_path / key)
    weights = load_file(tmp_path / "bf16" / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    assert runs["bf16"][-1] < runs["bf16"][0] - 0.5
    assert runs["bf16"][-1] == pytest.approx(runs["fp32"][-1], abs=0.1 * (runs["fp32"][0] - runs["fp32"][-1]))

    again = tmp_path / "again"
    shutil.copytree(tmp_path / "bf16", again)
    cfg, base = load_config(
        make_config(master_weights="bf16", output_dir=str(again), resume_from_checkpoint="checkpoint-4", **common)
    )
    train(cfg, base, resume=True)
    resumed = load_file(again / "model.safetensors")
    assert resumed.keys() == weights.keys()
    for name in weights:
        assert torch.equal(resumed[name], weights[name]), name


def test_lisa_trains_its_sampled_layers_in_bf16(prepared):
    from strop.strategies.lisa import active_layers
    from strop.train.loop import train_step

    run = prepared(adapter="lisa", lisa_n_layers=1, lisa_step_interval=1, bf16=True, master_weights="bf16", seed=5)
    assert {p.dtype for p in run.model.parameters()} == {torch.bfloat16}
    optimizer = run.strategy.build_optimizer(run.model, run.cfg, run.device)
    assert isinstance(optimizer, BF16AdamW)
    run.strategy.on_step_start(run.model, 0, run.cfg)
    before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    train_step(run, 0, optimizer, None, torch.bfloat16)
    active = active_layers(2, run.cfg, 0)
    for name, p in run.model.named_parameters():
        if name.startswith("model.layers.") and int(name.split(".")[2]) not in active:
            assert torch.equal(p, before[name]), name
    assert not torch.equal(run.model.lm_head.weight, before["lm_head.weight"])
