"""GPTQ/AWQ export: calibration files, group sizes, the quality check, and (with llm-compressor installed)
an export that transformers loads and that stays close to the original model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from strop.errors import StropError
from strop.export.calibration import read_texts, split_held_out
from strop.export.quant_check import compare
from strop.export.quantize import choose_group_size

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is two plus two? Four.",
    "Classify the sentiment of this review. Sentiment: positive",
    "hello world hello world hello world",
    "Sentiment: negative. The fox was not quick.",
    "Two plus two is four, and the dog is lazy.",
]


def _parser() -> argparse.ArgumentParser:
    from strop.commands import export as command

    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers())
    return parser


def test_group_size_fits_every_layer() -> None:
    assert choose_group_size({"a": 576, "b": 1536}, None) == 64  # SmolLM2-135M
    assert choose_group_size({"a": 4096, "b": 14336}, None) == 128
    assert choose_group_size({"a": 96}, None) == 32
    assert choose_group_size({"a": 576}, 32) == 32
    with pytest.raises(StropError, match=r"--group-size 128 does not divide the input width 576 of a .*e\.g\. 64"):
        choose_group_size({"a": 576, "b": 1536}, 128)
    with pytest.raises(StropError, match="pass --group-size"):
        choose_group_size({"odd": 100}, None)


def test_calibration_file_formats(tmp_path: Path, tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    txt = tmp_path / "prompts.txt"
    txt.write_text("First paragraph\nstill first.\n\n\nSecond one.\n")
    assert read_texts(txt, tokenizer) == ["First paragraph\nstill first.", "Second one."]
    rows = [
        {"messages": [{"role": "user", "content": "hi"}]},
        {"conversations": [{"from": "human", "value": "hey"}, {"from": "gpt", "value": "yo"}]},
        {"instruction": "Add", "input": "2+2", "output": "4"},
        {"text": "plain text"},
        {"prompt": "Q: ", "completion": "A"},
    ]
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    texts = read_texts(jsonl, tokenizer)
    assert texts[0] == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"  # a generation prompt follows
    assert texts[1] == "<|im_start|>user\nhey<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"
    assert texts[2] == "<|im_start|>user\nAdd\n\n2+2<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
    assert texts[3:] == ["plain text", "Q: A"]


def test_calibration_errors_name_file_and_line(tmp_path: Path, tiny_model: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"label": 1}\n')
    with pytest.raises(StropError, match=rf"{bad}:2: no text to calibrate on"):
        read_texts(bad, None)
    bad.write_text('{"text": 3}\n')
    with pytest.raises(StropError, match=rf"{bad}:1: field 'text' must be a string, got int"):
        read_texts(bad, None)
    with pytest.raises(StropError, match="--calibration: no such file"):
        read_texts(tmp_path / "missing.txt", None)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    with pytest.raises(StropError, match="holds no text"):
        read_texts(empty, None)


def test_held_out_split_keeps_evaluation_text_out_of_calibration() -> None:
    texts = [f"text {i}" for i in range(25)]
    calibration, held = split_held_out(texts)
    assert held == ["text 0", "text 10", "text 20"] and len(calibration) == 22
    assert not set(held) & set(calibration)
    assert split_held_out(["a", "a", "b"]) == (["a", "a"], ["b"])
    with pytest.raises(StropError, match="give more texts or a separate --eval file"):
        split_held_out(["only one"])


def test_quality_check_scores_identity_and_a_perturbed_copy(tmp_path: Path, tiny_model: Path) -> None:
    same = compare(tiny_model, tiny_model, TEXTS)
    assert same.agreement == 1.0 and same.perplexity_quantized == pytest.approx(same.perplexity_reference)
    assert same.texts == len(TEXTS) and "agreement 1.000" in same.line() and "(+0.0%)" in same.line()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.model.layers.parameters():
            param.add_(torch.randn_like(param) * param.std())
    model.save_pretrained(tmp_path / "noisy")
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(tmp_path / "noisy")
    noisy = compare(tiny_model, tmp_path / "noisy", TEXTS)
    assert noisy.agreement < 0.9 and noisy.tokens == same.tokens
    assert noisy.perplexity_quantized != pytest.approx(noisy.perplexity_reference)


def test_command_checks_its_options(tmp_path: Path, tiny_model: Path) -> None:
    parser = _parser()
    args = parser.parse_args(["export", str(tiny_model), "--format", "gptq"])
    with pytest.raises(StropError, match="needs --calibration FILE"):
        args.func(args)
    args = parser.parse_args(["export", str(tiny_model), "--format", "awq", "--gguf", "q4_0", "--calibration", "x"])
    with pytest.raises(StropError, match="are GGUF options"):
        args.func(args)
    args = parser.parse_args(["export", str(tiny_model), "--calibration", "x.txt"])
    with pytest.raises(StropError, match="for --format gptq or awq"):
        args.func(args)


@pytest.mark.parametrize("fmt", ["gptq", "awq"])
def test_export_loads_in_transformers_and_stays_close(fmt: str, tmp_path: Path, tiny_model: Path, capsys) -> None:
    pytest.importorskip("llmcompressor")
    from safetensors import safe_open

    calibration = tmp_path / "calibration.txt"
    calibration.write_text("\n\n".join(TEXTS * 2))
    out = tmp_path / f"tiny-{fmt}"
    args = _parser().parse_args(
        ["export", str(tiny_model), "--format", fmt, "--calibration", str(calibration), "--out", str(out)]
        + ["--max-length", "32"]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert f"{fmt.upper()} int4 (group size 64, 10 calibration texts): {out}" in printed
    assert "quality on 2 held-out text(s)" in printed

    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["format"] == "pack-quantized"
    weights = config["config_groups"]["group_0"]["weights"]
    assert (weights["num_bits"], weights["group_size"], weights["symmetric"]) == (4, 64, True)
    with safe_open(out / "model.safetensors", "pt") as handle:
        packed = handle.get_tensor("model.layers.0.mlp.down_proj.weight_packed")
    assert packed.dtype == torch.int32 and packed.shape == (64, 128 // 8)  # eight int4 values per int32

    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    held = dict(loaded.model.layers[0].mlp.down_proj.named_parameters())
    assert held["weight_packed"].dtype == torch.int32  # runs on the int4 weights (unpacked per forward)
    quality = compare(tiny_model, out, TEXTS)
    # a random tiny model has near-ties everywhere (AWQ measured 0.80); perplexity barely moves
    assert quality.agreement >= 0.7 and quality.perplexity_quantized != quality.perplexity_reference
    assert abs(quality.perplexity_quantized / quality.perplexity_reference - 1) < 0.05
