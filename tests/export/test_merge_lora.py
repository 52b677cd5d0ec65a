"""merge-lora: the merged model computes what base + adapter computed, and carries the tokenizer."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from strop.errors import StropError
from strop.export.merge_lora import merge_lora


def _make_adapter(base_dir: Path, adapter_dir: Path):
    """A LoRA on every linear layer, with lora_B randomised (peft initialises it to zero, which
    would make any merge trivially right)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    model.save_pretrained(str(adapter_dir))
    return model.eval()


@pytest.mark.slow
def test_merged_logits_match_peft_model(tiny_llama: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = tmp_path / "adapter"
    peft_model = _make_adapter(tiny_llama, adapter)
    tok = AutoTokenizer.from_pretrained(str(tiny_llama))
    tok.chat_template = "{{ 'adapter template' }}"  # marks the adapter's tokenizer as the one used
    tok.save_pretrained(str(adapter))
    (adapter / "strop_config.yml").write_text("base_model: x\nload_in_4bit: true\n")

    out = merge_lora(tiny_llama, adapter, tmp_path / "merged")
    assert "QLoRA" in capsys.readouterr().err
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not any(p.name.startswith(".merged.tmp") for p in tmp_path.iterdir())
    assert not (out / "adapter_config.json").exists()

    merged = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32).eval()
    ids = torch.randint(0, 49152, (3, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
        got = merged(input_ids=ids).logits
        plain = base(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()
    assert (plain - expected).abs().max() > 1e-2  # the adapter really changes the outputs
    assert AutoTokenizer.from_pretrained(str(out)).chat_template == "{{ 'adapter template' }}"

    again = merge_lora(tiny_llama, adapter, out, qlora=False)  # a re-merge replaces the old folder
    assert again == out and (out / "config.json").is_file() and not (tmp_path / "merged.old").exists()


@pytest.mark.slow
def test_cli_merge_lora_from_training_config(tiny_llama: Path, tmp_path: Path) -> None:
    from strop.commands import export as command

    adapter = tmp_path / "run"
    _make_adapter(tiny_llama, adapter)  # no tokenizer in the adapter: it comes from the base
    config = tmp_path / "train.yml"
    config.write_text(
        f"base_model: {tiny_llama}\noutput_dir: {adapter}\nadapter: lora\n"
        "datasets:\n  - path: data.jsonl\n    type: text\n"
    )
    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["merge-lora", str(config)])
    assert args.func(args) == 0
    assert (adapter / "merged" / "model.safetensors").is_file()
    assert (adapter / "merged" / "tokenizer.json").is_file()


def test_merge_errors(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    with pytest.raises(StropError, match="config.json"):
        merge_lora(tmp_path / "base", tmp_path, tmp_path / "out")
    (tmp_path / "base" / "config.json").write_text("{}")
    with pytest.raises(StropError, match="adapter_config.json"):
        merge_lora(tmp_path / "base", tmp_path, tmp_path / "out")

    from strop.commands import export as command

    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["merge-lora", "--base", str(tmp_path / "base")])
    with pytest.raises(StropError, match="--adapter"):
        args.func(args)
