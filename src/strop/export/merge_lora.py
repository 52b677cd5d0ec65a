"""Fold a LoRA adapter into its base model, producing a plain HF model folder.

A merged folder loads anywhere without peft and is what GGUF export consumes. The merge runs in
float32 (W + scale * B @ A rounded once), then the result is cast back to the dtype the base was
saved in, so a bf16 base yields a bf16 merged model of the same size.

The folder is written in a private temporary folder beside `out` and renamed into place only when
complete, so an interrupted merge never leaves something that looks like a finished model; a killed
merge's leftover is removed by the next one (strop/safe_io.py). An existing `out` is replaced only when
strop wrote it (strop/manifest.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from strop import manifest
from strop.errors import StropError
from strop.safe_io import disk_errors, temp_folder

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
_QLORA_KEYS = ("strop_quantization", "load_in_4bit", "quantization")


def _find_flag(node: Any, keys: tuple[str, ...]) -> bool:
    """True when any of `keys` is set (truthy, and not "none"/"false") anywhere in a nested mapping."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in keys and value not in (None, False, "", "none", "false", "no"):
                return True
            if _find_flag(value, keys):
                return True
    elif isinstance(node, list):
        return any(_find_flag(item, keys) for item in node)
    return False


def adapter_was_qlora(adapter_dir: Path) -> bool:
    """Whether the adapter was trained on a 4-bit base: the QLoRA strategy's note, or the saved config."""
    import yaml

    if (adapter_dir / "strop_quantization.json").is_file():
        return True

    for name in ("strop_config.yml", "strop_config.yaml"):
        path = adapter_dir / name
        if path.is_file():
            try:
                return _find_flag(yaml.safe_load(path.read_text(encoding="utf-8")), _QLORA_KEYS)
            except yaml.YAMLError:
                return False
    return False


def saved_dtype(base_dir: Path):
    """The dtype the base checkpoint was saved in (float32 when config.json does not say)."""
    import json

    import torch

    config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    name = str(config.get("dtype") or config.get("torch_dtype") or "float32").replace("torch.", "")
    dtype = getattr(torch, name, None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32


def _check_inputs(base: Path, adapter: Path) -> None:
    if not (base / "config.json").is_file():
        raise StropError(f"base model {base} is not a Hugging Face model folder (no config.json)")
    from strop.models import bottleneck

    if (adapter / bottleneck.CONFIG_FILE).is_file():
        raise StropError(f"{adapter}: {bottleneck.NOT_MERGEABLE}")
    if not (adapter / "adapter_config.json").is_file():
        raise StropError(
            f"{adapter} has no adapter_config.json: not a LoRA adapter folder "
            "(a full fine-tune is already a complete model and needs no merge)"
        )


def _save_processor(model, adapter: Path, base: Path, out: Path) -> None:
    """A vision-language model's processor (image processor, chat template) goes with the merged model."""
    from strop.vlm.models import is_vlm, load_processor

    if is_vlm(model):
        has_own = any((adapter / name).is_file() for name in ("processor_config.json", "preprocessor_config.json"))
        load_processor(adapter if has_own else base).save_pretrained(str(out))


def merge_lora(base: str | Path, adapter: str | Path, out: str | Path, qlora: bool | None = None) -> Path:
    """Merge the PEFT adapter in `adapter` into the HF model in `base`; save safetensors + tokenizer to `out`.

    `qlora`: the adapter was trained on a 4-bit quantized base. None detects it from the adapter's
    strop_config.yml. Either way the merge goes into the full-precision base weights (merging into
    dequantized 4-bit weights would bake the quantization error into the result).
    """
    import torch
    from transformers import AutoTokenizer

    from strop.models import load_adapter, load_model

    base, adapter, out = Path(base), Path(adapter), Path(out)
    _check_inputs(base, adapter)
    if qlora is None:
        qlora = adapter_was_qlora(adapter)
    if qlora:
        print(
            "strop: note: this adapter was trained on a 4-bit (QLoRA) base; merging it into the "
            f"full-precision weights of {base}. Outputs can differ slightly from the 4-bit training model.",
            file=sys.stderr,
        )
    dtype = saved_dtype(base)
    model = load_adapter(load_model(str(base), torch.float32), adapter).merge_and_unload()
    model = model.to(dtype)
    has_tok = any((adapter / name).is_file() for name in _TOKENIZER_FILES)
    tokenizer = AutoTokenizer.from_pretrained(str(adapter if has_tok else base))

    manifest.check_replaceable(out, "--out")
    needed = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    with disk_errors(out, needed), temp_folder(out) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        _save_processor(model, adapter, base, tmp)
        return manifest.place_folder(tmp, out, "--out")
