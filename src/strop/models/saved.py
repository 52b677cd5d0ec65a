"""Load what a folder holds, once for every reader (chat, reward scoring, evaluation, data generation):
a PEFT adapter folder is loaded onto the base it was trained on; anything else (a full or merged model
folder, a GGUF file, an alias, a hub id) is loaded as a model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from strop.errors import StropError
from strop.models import bottleneck
from strop.models.chat_template import ensure_chat_template
from strop.models.loading import load_adapter, load_model, load_tokenizer, resolve_model_path
from strop.moe import lora_experts
from strop.runtime.devices import default_device

#: The files that mark an adapter folder that names its base: PEFT's config, strop's bottleneck config.
ADAPTER_FILES = ("adapter_config.json", bottleneck.CONFIG_FILE)


def saved_config(folder: Path) -> dict[str, Any]:
    """strop_config.yml of a training output folder, or {} where there is none."""
    saved = Path(folder) / "strop_config.yml"
    if not saved.is_file():
        return {}
    try:
        config = yaml.safe_load(saved.read_text())
    except yaml.YAMLError as err:
        raise StropError(f"{saved}: not valid YAML: {' '.join(str(err).split())}") from err
    return config if isinstance(config, dict) else {}


def is_adapter_folder(folder: Path) -> bool:
    """Whether `folder` holds an adapter that goes onto a base: PEFT's or a bottleneck's."""
    return any((Path(folder) / name).is_file() for name in ADAPTER_FILES)


def adapter_base(folder: Path) -> str:
    """The base an adapter was trained on: strop's saved config first, then the adapter's own record."""
    base = saved_config(folder).get("base_model")
    if base:
        return str(base)
    if (folder / bottleneck.CONFIG_FILE).is_file():
        return str(bottleneck.read_config(folder)["base_model"])
    try:
        base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except json.JSONDecodeError as err:
        raise StropError(f"{folder / 'adapter_config.json'}: not valid JSON ({err})") from err
    if not base:
        raise StropError(
            f"{folder}: neither strop_config.yml nor adapter_config.json says which base model the adapter belongs to"
        )
    return base


def load_saved(
    target: str | Path, trust_remote_code: bool = False, dtype: torch.dtype = torch.float32
) -> tuple[nn.Module, str]:
    """(model, where its tokenizer is) for an alias, hub id, model folder or adapter folder."""
    folder = Path(target)
    if (folder / lora_experts.CONFIG_FILE).is_file():  # adapter: moe_lora (strop's own format)
        base = resolve_model_path(json.loads((folder / lora_experts.CONFIG_FILE).read_text())["base_model"])
        model = lora_experts.load(load_model(base, dtype, trust_remote_code), folder)
        return model, str(folder if (folder / "tokenizer_config.json").is_file() else base)
    if (folder / bottleneck.CONFIG_FILE).is_file():  # adapter: houlsby / pfeiffer (strop's own format)
        base = resolve_model_path(adapter_base(folder))
        model = bottleneck.load(load_model(base, dtype, trust_remote_code), folder)
        return model, str(folder if (folder / "tokenizer_config.json").is_file() else base)
    if (folder / "adapter_config.json").is_file():
        base = resolve_model_path(adapter_base(folder))
        model = load_adapter(load_model(base, dtype, trust_remote_code), folder)
        return model, str(folder if (folder / "tokenizer_config.json").is_file() else base)
    path = resolve_model_path(str(target), "model")
    return load_model(path, dtype, trust_remote_code), path


def load_for_chat(target: str, trust_remote_code: bool = False) -> tuple[nn.Module, Any]:
    """(model, tokenizer) ready to answer: the model on the default device, the tokenizer with the chat
    template the folder was trained with (its own, or ChatML where it has none)."""
    model, tokenizer_source = load_saved(target, trust_remote_code)
    tokenizer = load_tokenizer(tokenizer_source, trust_remote_code)
    ensure_chat_template(tokenizer, saved_config(Path(target)).get("chat_template"))
    return model.to(default_device()), tokenizer
