"""QLoRA: the base in 4-bit NF4 with double quantization (bitsandbytes, on the CPU), LoRA on top."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

bnb = pytest.importorskip("bitsandbytes")

# The 16 NF4 levels of Dettmers et al. 2023 (quantiles of N(0,1) normalised to [-1, 1], exact zero).
NF4 = torch.tensor(
    [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230194568634,
        0.33791524171829224,
        0.44070982933044434,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ]
)
MAX_HALF_GAP = float((NF4[1:] - NF4[:-1]).max() / 2)  # 0.152: the worst rounding, as a share of absmax


def reference_nf4(w: torch.Tensor, block: int = 64) -> torch.Tensor:
    """Blockwise absmax NF4, written plainly: w ≈ absmax_b · NF4[argmin |w/absmax_b - q|]."""
    flat = w.flatten()
    pad = (-flat.numel()) % block
    blocks = torch.cat([flat, flat.new_zeros(pad)]).view(-1, block)
    absmax = blocks.abs().amax(dim=1, keepdim=True)
    index = ((blocks / absmax).unsqueeze(-1) - NF4).abs().argmin(dim=-1)
    return (NF4[index] * absmax).flatten()[: flat.numel()].view_as(w)


def test_nf4_matches_reference_quantizer_on_odd_shape():
    from bitsandbytes.functional import dequantize_4bit, quantize_4bit

    torch.manual_seed(0)
    w = torch.randn(7, 45) * 0.3  # 315 values: four full blocks and a ragged one
    packed, state = quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=False)
    torch.testing.assert_close(dequantize_4bit(packed, state), reference_nf4(w), rtol=1e-6, atol=1e-7)


def test_nf4_double_quant_round_trip_within_bound():
    from bitsandbytes.functional import dequantize_4bit, quantize_4bit

    torch.manual_seed(1)
    w = torch.randn(96, 128)
    packed, state = quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
    assert state.nested and packed.numel() == w.numel() // 2  # two weights a byte; absmax itself 8-bit
    back = dequantize_4bit(packed, state)
    absmax = w.flatten().view(-1, 64).abs().amax(dim=1, keepdim=True)
    err = (back - w).flatten().view(-1, 64).abs()
    # rounding to the nearest level, plus the 8-bit error of the quantized absmax (< 2 % here)
    assert (err <= absmax * (MAX_HALF_GAP + 0.02)).all()
    assert err.mean() / w.abs().mean() < 0.15


def test_qlora_base_is_nf4_double_quant_and_only_lora_trains(prepared):
    run = prepared(adapter="qlora")
    base = run.strategy.base_model(run.model)
    q_proj = base.model.layers[0].self_attn.q_proj.base_layer
    assert isinstance(q_proj, bnb.nn.Linear4bit)
    assert q_proj.weight.quant_state.quant_type == "nf4" and q_proj.weight.quant_state.nested
    assert not isinstance(base.lm_head, bnb.nn.Linear4bit) and base.lm_head.weight.dtype == torch.float32
    names = list(run.strategy.trainable_parameters(run.model))
    assert names and all("lora_" in n for n in names)
    from strop.models import load_model

    _, total = run.strategy.count_parameters(run.model)  # 4-bit weights count at their unpacked size
    lora = sum(p.numel() for p in run.strategy.trainable_parameters(run.model).values())
    assert total == sum(p.numel() for p in load_model(run.model_path).parameters()) + lora


def test_lora_with_load_in_4bit_is_qlora(prepared):
    run = prepared(adapter="lora", load_in_4bit=True)
    assert getattr(run.strategy.base_model(run.model), "is_loaded_in_4bit", False)


def test_full_with_load_in_4bit_is_refused(make_config):
    from strop.config import load_config
    from strop.errors import StropError
    from strop.train.loop import prepare

    cfg, base = load_config(make_config(adapter="full", load_in_4bit=True))
    with pytest.raises(StropError, match="cannot be stored in 4-bit"):
        prepare(cfg, base)


def test_saved_adapter_reloads_on_4bit_base_with_identical_outputs(prepared, tmp_path):
    from peft import PeftModel

    from strop.models.quantized import load_4bit

    run = prepared(adapter="qlora", lora_target_modules=["q_proj", "v_proj", "down_proj"])
    with torch.no_grad():
        for name, p in run.strategy.trainable_parameters(run.model).items():
            p.add_(torch.randn_like(p) * 0.2)
    run.model.eval()
    ids = torch.randint(3, 250, (2, 11))
    with torch.no_grad():
        expected = run.model(ids).logits
    out = tmp_path / "adapter"
    out.mkdir()
    run.strategy.save(run.model, run.tokenizer, out)
    note = json.loads((out / "strop_quantization.json").read_text())
    assert note["quant_type"] == "nf4" and note["double_quant"] is True
    reloaded = PeftModel.from_pretrained(load_4bit(run.model_path, run.cfg, torch.device("cpu")), out).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, expected, rtol=1e-5, atol=1e-5)


def test_survey_config_runs_unchanged(tmp_path, tiny_model, monkeypatch):
    """The survey's QLoRA + NEFTune SFT config, with only base_model and the dataset path replaced."""
    from strop.config import load_config
    from strop.train import loop

    raw = yaml.safe_load((Path(__file__).parent / "data" / "survey_sft_config.yml").read_text())
    assert raw["load_in_4bit"] is True and raw["adapter"] == "lora" and raw["neftune_noise_alpha"] == 5
    raw["base_model"] = str(tiny_model)
    rows = [{"instruction": f"Say {w}", "output": f"{w} {w}"} for w in ("fox", "dog", "two", "four")]
    (tmp_path / "domain_sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "sft_config.yml").write_text(yaml.safe_dump(raw))  # dataset path resolves next to the config
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(loop, "plot_losses", lambda *a, **k: None)
    cfg, base = load_config(tmp_path / "sft_config.yml")
    out = loop.train(cfg, base)
    assert out == Path("./sft-model") and (tmp_path / "sft-model" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "sft-model" / "strop_quantization.json").is_file()
    shutil.rmtree(tmp_path / "sft-model")


def test_4bit_base_dequantizes_to_the_load_dtype(tiny_model):
    """Under bf16 kernels the base loads in bf16, so each NF4 weight dequantizes straight to bf16 (loaded in
    fp32 it went NF4 → fp32 → a bf16 copy in every matmul of the 8B QLoRA run on an H200)."""
    from types import SimpleNamespace

    from strop.models.quantized import load_4bit

    cfg = SimpleNamespace(trust_remote_code=False, model_type=None, fp16=False, bf16=True)
    for dtype in (torch.bfloat16, torch.float32):
        model = load_4bit(str(tiny_model), cfg, torch.device("cpu"), dtype=dtype)
        weights = [m.weight for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
        assert weights and all(w.quant_state.dtype == dtype for w in weights)
        assert bnb.functional.dequantize_4bit(weights[0].data, weights[0].quant_state).dtype == dtype
        assert model.get_input_embeddings().weight.dtype == dtype
