"""GPTQ and AWQ 4-bit exports in the compressed-tensors format, through llm-compressor (`strop[quant]`).

GPTQ (Frantar et al. 2022) quantizes each linear layer column by column and pushes every column's
rounding error onto the columns not yet quantized, weighted by the inverse Hessian 2XXᵀ of the layer's
calibration inputs. AWQ (Lin et al. 2023) first scales input channels by a per-channel factor searched on
the calibration activations, so that the weights that meet large activations lose less to rounding, and
then rounds to nearest. Both store symmetric int4 weights in groups along the input dimension, with one
scale per group.

strop does not reimplement them: llm-compressor (the vLLM project's quantizer) does both, writes the
"pack-quantized" compressed-tensors format that vLLM serves with its Marlin kernels and that transformers
loads (with the `compressed-tensors` package), and is kept in step with both. strop adds what a command
needs around it: the calibration file, a group size that fits the model, an atomic output folder, and
the quality check (quant_check.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from strop import manifest
from strop.errors import StropError
from strop.safe_io import disk_errors, temp_folder

FORMATS = ("gptq", "awq")
GROUP_SIZES = (128, 64, 32)


@dataclass
class QuantResult:
    """What a GPTQ/AWQ export wrote, for the command to report."""

    path: Path
    fmt: str
    group_size: int
    samples: int
    seconds: float
    size_bytes: int


def import_llmcompressor():
    """The llmcompressor package, or a StropError that says how to install it."""
    try:
        import llmcompressor
    except ImportError as err:
        raise StropError(
            f"GPTQ/AWQ export needs llm-compressor ({err}); install it with: pip install 'strop[quant]'"
        ) from err
    return llmcompressor


def linear_widths(model) -> dict[str, int]:
    """Input width of every linear layer that gets quantized (all but the output head)."""
    import torch

    return {
        name: module.in_features
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head")
    }


def choose_group_size(widths: dict[str, int], requested: int | None) -> int:
    """`requested`, or the largest of 128/64/32 that splits every layer's input into whole groups
    (SmolLM2-135M's 576-wide layers take 64). vLLM's int4 kernels take these three sizes."""
    if not widths:
        raise StropError("the model has no linear layers to quantize")
    if requested is not None:
        if requested <= 0:
            raise StropError(f"--group-size must be positive, got {requested}")
        bad = sorted((name, width) for name, width in widths.items() if width % requested)
        if bad:
            name, width = bad[0]
            raise StropError(
                f"--group-size {requested} does not divide the input width {width} of {name} "
                f"({len(bad)} layer(s)); choose a divisor, e.g. {choose_group_size(widths, None)}"
            )
        return requested
    for size in GROUP_SIZES:
        if all(width % size == 0 for width in widths.values()):
            return size
    raise StropError(
        f"no group size of {GROUP_SIZES} divides the layer widths {sorted(set(widths.values()))}; pass --group-size"
    )


def _recipe(fmt: str, group_size: int):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    # Symmetric int4 for both (the W4A16 preset). AWQ's paper uses zero points, but transformers 5.24
    # cannot load llm-compressor's packed zero points (a size mismatch; 5.17 could): AWQ's scale search
    # does not depend on them, and the symmetric folder loads in both and in vLLM.
    weights = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=group_size)
    groups = {"group_0": QuantizationScheme(targets=["Linear"], weights=weights)}
    if fmt == "gptq":
        from llmcompressor.modifiers.quantization import GPTQModifier

        return GPTQModifier(config_groups=groups, ignore=["lm_head"])
    from llmcompressor.modifiers.awq import AWQModifier

    return AWQModifier(config_groups=groups, ignore=["lm_head"])


@contextmanager
def _cpu_safe_cache() -> Iterator[None]:
    """llm-compressor 0.14's AWQ pins its cached activations for faster GPU transfers, which raises
    "Cannot access accelerator device" on a machine without one. Pinning only serves copies to an
    accelerator, so without one it is skipped, for the duration of the export only."""
    import torch

    try:
        from llmcompressor.pipelines.cache import IntermediatesCache
    except ImportError:
        yield
        return
    original = getattr(IntermediatesCache, "pin_memory", None)
    if original is None or torch.accelerator.is_available():
        yield
        return
    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original


def _calibration_dataset(tokenizer, texts: list[str], max_length: int):
    from datasets import Dataset

    rows = [tokenizer(text, truncation=True, max_length=max_length, add_special_tokens=False) for text in texts]
    rows = [row for row in rows if row["input_ids"]]
    return Dataset.from_dict(
        {"input_ids": [r["input_ids"] for r in rows], "attention_mask": [r["attention_mask"] for r in rows]}
    )


def export_quantized(
    model_dir: str | Path,
    out: str | Path,
    fmt: str,
    texts: list[str],
    group_size: int | None = None,
    max_length: int = 512,
) -> QuantResult:
    """Quantize the HF model in `model_dir` to 4-bit `fmt` ("gptq" or "awq"), calibrated on `texts`,
    and write a compressed-tensors model folder (safetensors, config, tokenizer) to `out`."""
    if fmt not in FORMATS:
        raise StropError(f"unknown quantized format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if not texts:
        raise StropError("--calibration: no calibration text")
    import_llmcompressor()
    from llmcompressor import oneshot
    from transformers import AutoTokenizer

    from strop.export.merge_lora import saved_dtype
    from strop.models import load_model

    start = time.perf_counter()
    model_dir, out = Path(model_dir), Path(out)
    manifest.check_replaceable(out, "--out")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = load_model(str(model_dir), saved_dtype(model_dir))
    size = choose_group_size(linear_widths(model), group_size)
    dataset = _calibration_dataset(tokenizer, texts, max_length)
    with _cpu_safe_cache():
        oneshot(
            model=model,
            dataset=dataset,
            recipe=_recipe(fmt, size),
            max_seq_length=max_length,
            num_calibration_samples=len(dataset),
        )
    with disk_errors(out), temp_folder(out) as tmp:
        model.save_pretrained(str(tmp), save_compressed=True)
        tokenizer.save_pretrained(str(tmp))
        manifest.place_folder(tmp, out, "--out")
    written = sum(p.stat().st_size for p in out.rglob("*.safetensors"))
    return QuantResult(out, fmt, size, len(dataset), time.perf_counter() - start, written)
