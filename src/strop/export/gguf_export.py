"""Export a Hugging Face model folder to a single GGUF file that llama.cpp (and Ollama) can run.

f32/f16/bf16/q8_0/q4_0 are written directly with the `gguf` package. K-quants (q4_k_m, q5_k_m, q6_k)
need llama.cpp's own quantizer, whose per-tensor type mix ("_M" = some tensors kept at higher
precision) and importance search are not in the gguf package: for those an f16 GGUF is written to a
temporary file first and requantized by `llama_model_quantize` from llama-cpp-python (the optional
`strop[gguf]` extra).

Files appear atomically: everything is written into a fresh private folder beside the output
(strop/safe_io.py; never a predictable name a planted link could redirect) and renamed at the end, so
a crash or Ctrl-C never leaves a truncated file under the final name.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from strop import manifest
from strop.errors import StropError
from strop.export.gguf_arch import (
    TensorMapper,
    arch_spec,
    hf_tensor_names,
    iter_hf_tensors,
    llama3_rope_freqs,
    load_config,
    write_hparams,
)
from strop.export.gguf_vocab import read_vocab, write_vocab
from strop.export.kquant import KQUANT_FTYPES, import_llama_cpp, kquantize
from strop.models.loading import check_weights
from strop.safe_io import disk_errors, temp_folder

Q = gguf.GGMLQuantizationType
FT = gguf.LlamaFileType

# qtype -> (default tensor type, file type written to general.file_type)
DIRECT_QTYPES: dict[str, tuple[gguf.GGMLQuantizationType, gguf.LlamaFileType]] = {
    "f32": (Q.F32, FT.ALL_F32),
    "f16": (Q.F16, FT.MOSTLY_F16),
    "bf16": (Q.BF16, FT.MOSTLY_BF16),
    "q8_0": (Q.Q8_0, FT.MOSTLY_Q8_0),
    "q4_0": (Q.Q4_0, FT.MOSTLY_Q4_0),
}
QTYPES = tuple(DIRECT_QTYPES) + tuple(KQUANT_FTYPES)

# Tensors that carry the vocabulary are the most sensitive to rounding: at q4_0 they are kept at
# q8_0, in the spirit of llama-quantize keeping the output matrix at a higher precision.
_SENSITIVE = ("token_embd.weight", "output.weight")


@dataclass
class ExportResult:
    """What an export produced, for the CLI to report."""

    path: Path
    qtype: str
    seconds: float
    size_bytes: int


def tensor_type(name: str, data: np.ndarray, qtype: str) -> gguf.GGMLQuantizationType:
    """Storage type of one tensor: norms and biases (1-D) stay F32, as llama.cpp expects; matrices
    whose rows do not split into whole quantization blocks fall back to F16."""
    if (
        data.ndim <= 1 or ".ffn_gate_inp" in name
    ):  # MoE routers (and shared-expert gates) stay F32, as in llama.cpp's converter
        return Q.F32
    target = DIRECT_QTYPES[qtype][0]
    if qtype == "q4_0" and name in _SENSITIVE:
        target = Q.Q8_0
    block = gguf.GGML_QUANT_SIZES[target][0]
    if data.shape[-1] % block:
        return Q.F16
    return target


def _encode(data: np.ndarray, ttype: gguf.GGMLQuantizationType) -> np.ndarray:
    if ttype == Q.F32:
        return np.ascontiguousarray(data, dtype=np.float32)
    if ttype == Q.F16:
        return np.ascontiguousarray(data, dtype=np.float16)
    return gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), ttype)


def _progress(show: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not show,
    )


def _write_direct(model_dir: Path, out_tmp: Path, qtype: str, show_progress: bool) -> None:
    """Convert all tensors to `qtype` and write a complete GGUF to `out_tmp`."""
    config = load_config(model_dir)
    spec = arch_spec(config)
    mapper = TensorMapper(config, spec)
    vocab = read_vocab(model_dir, int(config["vocab_size"]))
    writer = gguf.GGUFWriter(str(out_tmp), gguf.MODEL_ARCH_NAMES[spec.arch])
    try:
        writer.add_type(gguf.GGUFType.MODEL)  # as llama.cpp's converter writes it (tests/parity)
        writer.add_name(Path(model_dir).resolve().name)
        write_hparams(writer, config, len(vocab.tokens))
        writer.add_file_type(int(DIRECT_QTYPES[qtype][1]))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        write_vocab(writer, vocab)
        freqs = llama3_rope_freqs(config)
        if freqs is not None:
            writer.add_tensor("rope_freqs.weight", freqs)
        names = hf_tensor_names(model_dir)
        with _progress(show_progress) as progress:
            task = progress.add_task(f"GGUF {qtype}", total=len(names))
            for hf_name, data in iter_hf_tensors(model_dir):
                for name, array in mapper.map(hf_name, data):
                    ttype = tensor_type(name, array, qtype)
                    encoded = _encode(array, ttype)
                    raw = None if ttype in (Q.F32, Q.F16) else ttype
                    writer.add_tensor(name, encoded, raw_dtype=raw)
                progress.advance(task)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def export_gguf(
    model_dir: str | Path,
    out_path: str | Path,
    qtype: str = "f16",
    show_progress: bool = True,
) -> Path:
    """Write `model_dir` (an HF folder with safetensors + tokenizer.json) to a GGUF file of `qtype`.

    Returns the final path. Raises StropError for unsupported architectures, tokenizers or qtypes.
    """
    qtype = qtype.lower()
    if qtype not in QTYPES:
        raise StropError(f"unknown GGUF type {qtype!r}; choose one of: {', '.join(QTYPES)}")
    model_dir, out = Path(model_dir), Path(out_path)
    if not model_dir.is_dir():
        raise StropError(f"model folder {model_dir} does not exist")
    check_weights(model_dir)  # a corrupt file is named before any output is started
    if qtype in KQUANT_FTYPES:
        import_llama_cpp()  # fail before spending minutes on the f16 pass
    if out.is_dir():
        raise StropError(f"--out {out} is a folder; give the path of the .gguf file to write")
    with disk_errors(out, intact=f"{out} is unchanged" if out.exists() else ""), temp_folder(out) as folder:
        tmp = folder / out.name
        if qtype in DIRECT_QTYPES:
            _write_direct(model_dir, tmp, qtype, show_progress)
        else:
            _write_direct(model_dir, folder / "f16.gguf", "f16", show_progress)
            kquantize(folder / "f16.gguf", tmp, qtype)
        manifest.claim(out)
        os.replace(tmp, out)
    return out


def export_gguf_timed(model_dir: str | Path, out_path: str | Path, qtype: str = "f16") -> ExportResult:
    """export_gguf plus the figures the CLI prints (elapsed seconds, file size)."""
    start = time.perf_counter()
    path = export_gguf(model_dir, out_path, qtype)
    return ExportResult(path, qtype.lower(), time.perf_counter() - start, path.stat().st_size)
