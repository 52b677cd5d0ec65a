import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from strop.config import load_config
from strop.train import checkpoint as ckpt
from strop.train.loop import prepare, train, train_step
from strop.train.optim import lr_factor


def _grad_update(config_path: Path, overrides: list[str]) -> dict[str, torch.Tensor]:
    """Parameter change of one SGD(lr=1) step: exactly minus the accumulated, normalised gradient."""
    cfg, base = load_config(config_path, overrides)
    run = prepare(cfg, base)
    run.model = run.strategy.apply(run.model, cfg)
    params = run.strategy.trainable_parameters(run.model)
    before = {k: v.detach().clone() for k, v in params.items()}
    optimizer = torch.optim.SGD(list(params.values()), lr=1.0)
    run.model.train()
    train_step(run, 0, optimizer, None, None)
    return {k: params[k].detach() - before[k] for k in params}


def test_accumulation_1x8_equals_8x1(make_config):
    """One batch of 8 and eight batches of 1 give the same update: the loss is normalised over all tokens."""
    path = make_config(adapter="full", max_grad_norm=None)
    big = _grad_update(path, ["micro_batch_size=8", "gradient_accumulation_steps=1"])
    small = _grad_update(path, ["micro_batch_size=1", "gradient_accumulation_steps=8"])
    assert any(v.abs().max() > 0 for v in big.values())
    for name in big:
        torch.testing.assert_close(small[name], big[name], rtol=1e-4, atol=1e-6)


def test_accumulation_mean_of_means_would_differ(make_config):
    """Guard that the test above can fail: 2x4 and 8x1 differ when each micro-batch is averaged alone."""
    path = make_config(adapter="full", max_grad_norm=None)
    big = _grad_update(path, ["micro_batch_size=8", "gradient_accumulation_steps=1"])
    split = _grad_update(path, ["micro_batch_size=4", "gradient_accumulation_steps=2"])
    for name in big:  # same math, so equal here too ...
        torch.testing.assert_close(split[name], big[name], rtol=1e-4, atol=1e-6)
    from strop.objectives.sft import SFTObjective

    class PerBatchMean(SFTObjective):  # ... while per-micro-batch averaging is not
        def loss(self, model, batch, denominator):
            return super().loss(model, batch, self.count(batch) * 2)

    cfg, base = load_config(path, ["micro_batch_size=4", "gradient_accumulation_steps=2"])
    run = prepare(cfg, base)
    run.model = run.strategy.apply(run.model, cfg)
    run.objective = PerBatchMean()
    params = run.strategy.trainable_parameters(run.model)
    before = {k: v.detach().clone() for k, v in params.items()}
    train_step(run, 0, torch.optim.SGD(list(params.values()), lr=1.0), None, None)
    assert not all(torch.allclose(params[k] - before[k], big[k], rtol=1e-4, atol=1e-6) for k in params)


def test_schedule_warmup_then_cosine_to_zero():
    assert lr_factor(0, 2, 10, "cosine") == pytest.approx(1 / 3)
    assert lr_factor(2, 2, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(10, 2, 10, "cosine") == pytest.approx(0.0)
    assert lr_factor(6, 2, 10, "linear") == pytest.approx(0.5)
    assert lr_factor(9, 2, 10, "constant") == 1.0


def test_lora_run_saves_peft_adapter_that_reloads(make_config, tiny_model):
    from peft import PeftModel

    from strop.models import load_model

    path = make_config(max_steps=4, learning_rate=5e-2, val_set_size=4, eval_steps=2)
    cfg, base = load_config(path)
    out = train(cfg, base)
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "strop_config.yml",
        "metrics.jsonl",
        "loss.png",
        "tokenizer.json",
    ):
        assert (out / name).is_file(), name
    assert not (out / "final.tmp").exists()
    adapter = load_file(out / "adapter_model.safetensors")
    x = torch.randint(3, 250, (2, 11))
    base_model = load_model(str(tiny_model)).eval()
    with torch.no_grad():
        base_logits = base_model(x).logits
        peft_logits = PeftModel.from_pretrained(load_model(str(tiny_model)), out).eval()(x).logits
    # Merge by hand, W + (alpha/r) B A, as an independent reference.
    scale = cfg.lora_alpha / cfg.lora_r
    state = base_model.state_dict()
    for key, a in adapter.items():
        if "lora_A" in key:
            b = adapter[key.replace("lora_A", "lora_B")]
            target = key.replace("base_model.model.", "").replace(".lora_A.weight", ".weight")
            state[target] = state[target] + scale * b @ a
    base_model.load_state_dict(state)
    with torch.no_grad():
        merged_logits = base_model(x).logits
    assert (peft_logits - base_logits).abs().max() > 1e-3
    torch.testing.assert_close(peft_logits, merged_logits, rtol=1e-4, atol=1e-4)
    records = (out / "metrics.jsonl").read_text().splitlines()
    assert len(records) == 4 and '"eval_loss"' in records[1]


def test_full_run_saves_hf_model(make_config):
    from transformers import AutoModelForCausalLM

    cfg, base = load_config(make_config(adapter="full", max_steps=2))
    out = train(cfg, base)
    AutoModelForCausalLM.from_pretrained(out)
    assert (out / "model.safetensors").is_file() and (out / "tokenizer_config.json").is_file()


def test_checkpoints_rotate_and_tmp_is_never_listed(make_config, tmp_path):
    cfg, base = load_config(make_config(max_steps=6, save_steps=2, save_total_limit=2))
    out = train(cfg, base)
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["checkpoint-4", "checkpoint-6"]
    (out / "checkpoint-8.tmp").mkdir()
    assert ckpt.list_checkpoints(out)[-1].name == "checkpoint-6"


def test_existing_output_needs_resume_or_overwrite(make_config):
    from strop.errors import StropError

    cfg, base = load_config(make_config(max_steps=1))
    train(cfg, base)
    with pytest.raises(StropError, match="--resume"):
        train(cfg, base)
    train(cfg, base, overwrite=True)


def _strop(config: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "strop", "train", str(config), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(make_config, tmp_path):
    rows = None
    common = dict(max_steps=40, save_steps=5, save_total_limit=2, lora_dropout=0.2, micro_batch_size=8)
    whole = make_config(rows, output_dir=str(tmp_path / "whole"), **common)
    cfg, base = load_config(whole)
    train(cfg, base)
    expected = load_file(tmp_path / "whole" / "adapter_model.safetensors")

    broken = make_config(rows, output_dir=str(tmp_path / "broken"), **common)
    proc = _strop(broken)
    deadline = time.time() + 300
    while not (tmp_path / "broken" / "checkpoint-10").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "broken" / "adapter_model.safetensors").exists(), "run finished before the kill"
    resumed = _strop(broken, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    got = load_file(tmp_path / "broken" / "adapter_model.safetensors")
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
