"""`strop train` and strop's kernels: the `kernels` / `kernel_checkpoint` keys, nothing patched on the CPU,
each strategy's allowance, and the same numbers whichever path the SFT loss takes."""

import json

import pytest
import torch

from strop import kernels
from strop.config import load_config
from strop.errors import StropError
from strop.strategies import STRATEGIES
from strop.strategies import kernels as wiring
from strop.train.loop import train

cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU path")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def losses(output_dir) -> list[float]:
    lines = (output_dir / "metrics.jsonl").read_text().splitlines()
    return [row["loss"] for row in map(json.loads, lines) if "loss" in row]


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_keys_default_and_validate(make_config):
    cfg, _ = load_config(make_config())
    assert (cfg.kernels, cfg.kernel_checkpoint) == (True, "auto")
    cfg, _ = load_config(make_config(kernels=False, kernel_checkpoint="offload"))
    assert (cfg.kernels, cfg.kernel_checkpoint) == (False, "offload")
    with pytest.raises(StropError, match="kernel_checkpoint"):
        load_config(make_config(kernel_checkpoint="disk"))
    with pytest.raises(StropError, match="kernels"):
        load_config(make_config(kernels="sometimes"))


@pytest.mark.parametrize(
    "mode,gradient_checkpointing,want",
    [("auto", False, None), ("auto", True, "gpu"), ("none", True, None), ("offload", False, "offload")],
)
def test_checkpoint_mode(make_config, mode, gradient_checkpointing, want):
    cfg, _ = load_config(make_config(kernel_checkpoint=mode, gradient_checkpointing=gradient_checkpointing))
    assert wiring.checkpoint_mode(cfg) == want


def test_strategy_allowances(make_config):
    cfg, _ = load_config(make_config())
    assert STRATEGIES["prompt_tuning"].kernel_options(cfg) is None
    assert STRATEGIES["prefix_tuning"].kernel_options(cfg) is None
    assert STRATEGIES["lora"].kernel_options(cfg).bf16_frozen
    assert STRATEGIES["qlora"].kernel_options(cfg).bf16_frozen
    for name in ("dora", "full", "bitfit", "spectrum", "lisa", "galore"):  # these keep their weights' dtype
        assert not STRATEGIES[name].kernel_options(cfg).bf16_frozen, name


@cpu_only
def test_cpu_run_patches_nothing(prepared):
    run = prepared()
    assert not any(hasattr(m, "_strop_forward") for m in run.model.modules())
    assert wiring.describe_kernels(run.model) == "off (no CUDA device)"
    assert not kernels.fused_loss_ready(run.model)
    assert wiring.describe_kernels(prepared(kernels=False).model) == "off (kernels: false)"


@cpu_only
def test_cpu_training_is_unchanged_by_the_switch(make_config, tmp_path):
    on = train(load_config(make_config(output_dir=str(tmp_path / "on")))[0])
    off = train(load_config(make_config(output_dir=str(tmp_path / "off"), kernels=False))[0])
    assert losses(on) == losses(off) and len(losses(on)) == 3


@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_sft_fused_loss_equals_plain(prepared, adapter):
    """The chunked linear+CE (its CPU fallback) gives the SFT loss and gradients of the logits path."""
    run = prepared(adapter=adapter)
    batch = run.objective.collate(run.train_rows[:4], run.tokenizer.pad_token_id)
    batch = {k: v.to(run.device) for k, v in batch.items()}
    denominator = run.objective.count(batch)
    run.model.train()
    kernels.record(run.model, {"fused_loss": False})
    plain, _ = run.objective.loss(run.model, batch, denominator)
    plain.backward()
    want = grads(run.model)
    run.model.zero_grad()
    kernels.record(run.model, {"fused_loss": True})
    fused, metrics = run.objective.loss(run.model, batch, denominator)
    fused.backward()
    assert float(metrics["loss"]) == pytest.approx(plain.item(), rel=1e-5)  # a device tensor on CUDA
    got = grads(run.model)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6)


@pytest.fixture
def as_if_cuda(monkeypatch):
    """Install the kernels on the CPU (their PyTorch fallbacks), to check the wiring without a GPU."""
    monkeypatch.setattr(wiring, "_on_cuda", lambda model: True)


def test_patched_run_hands_checkpointing_over(prepared, as_if_cuda):
    run = prepared(gradient_checkpointing=True)
    plan = wiring.describe_kernels(run.model)
    assert plan.startswith("on: ") and "checkpointed layers 2 (gpu)" in plan and "fused linear+CE" in plan
    base = run.strategy.base_model(run.model)
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})  # as the loop does
    assert not any(getattr(layer, "gradient_checkpointing", False) for layer in base.model.layers)


@pytest.mark.parametrize(
    "overrides",
    [{"gradient_checkpointing": True}, {"adapter": "full"}, {"sample_packing": True, "kernel_checkpoint": "gpu"}],
)
def test_patched_training_matches_library_path(make_config, tmp_path, as_if_cuda, overrides):
    on = train(load_config(make_config(output_dir=str(tmp_path / "on"), **overrides))[0])
    off = train(load_config(make_config(output_dir=str(tmp_path / "off"), kernels=False, **overrides))[0])
    assert losses(on) == pytest.approx(losses(off), rel=1e-5)


def test_soft_prompts_stay_unpatched(prepared, as_if_cuda):
    run = prepared(adapter="prompt_tuning", num_virtual_tokens=4)
    assert wiring.describe_kernels(run.model) == "off (not for prompt_tuning)"
    assert not any(hasattr(m, "_strop_forward") for m in run.model.modules())


def test_torchrun_keeps_library_path(prepared, as_if_cuda, monkeypatch):
    run = prepared(kernels=False)
    monkeypatch.setattr(wiring.distributed, "launched", lambda: True)
    wiring.install_kernels(run.model, run.strategy, run.cfg.model_copy(update={"kernels": True}))
    assert wiring.describe_kernels(run.model) == "off (not combined with FSDP2 under torchrun yet)"
    assert not any(hasattr(m, "_strop_forward") for m in run.model.modules())


@cpu_only
def test_qlora_4bit_layers_take_fused_lora_with_same_loss(prepared):
    pytest.importorskip("bitsandbytes")
    run = prepared(adapter="qlora")
    run.model.train()  # as the training loop runs it: bnb dequantizes to the compute dtype, as on the GPU
    torch.manual_seed(0)
    for name, param in run.model.named_parameters():
        if "lora_B" in name:  # non-zero B (PEFT starts it at zero) so the adapter term counts in the loss
            torch.nn.init.normal_(param, std=0.05)
    batch = run.objective.collate(run.train_rows[:2], run.tokenizer.pad_token_id)
    before, _ = run.objective.loss(run.model, batch, 1.0)
    done = kernels.patch_model(run.model, kernels.KernelOptions(checkpoint=None))
    assert done["lora"] > 0 and done["groups"] > 0 and done["rms_norm"] > 0
    q_proj = run.strategy.base_model(run.model).model.layers[0].self_attn.q_proj
    assert q_proj.base_layer.weight.dtype == torch.uint8 and q_proj._strop_group.w_cat is None  # still packed
    after, _ = run.objective.loss(run.model, batch, 1.0)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)


@cuda
@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_cuda_run_is_patched_and_matches_library_path(make_config, prepared, tmp_path, adapter):
    plan = wiring.describe_kernels(prepared(adapter=adapter, gradient_checkpointing=True).model)
    assert plan.startswith("on: ") and "fused linear+CE" in plan and "checkpointed layers 2 (gpu)" in plan
    on_config = make_config(adapter=adapter, output_dir=str(tmp_path / "on"), gradient_checkpointing=True)
    on = train(load_config(on_config)[0])
    off = train(load_config(make_config(adapter=adapter, output_dir=str(tmp_path / "off"), kernels=False))[0])
    assert losses(on) == pytest.approx(losses(off), rel=1e-4)
