"""K-quant requantization through llama.cpp's own quantizer (llama-cpp-python, the strop[gguf] extra).

The gguf Python package cannot produce K-quants, and the "_M" mixes (which tensors get more bits)
are llama.cpp policy, so strop hands an f16 GGUF to `llama_model_quantize`, the library function
behind `llama-quantize`. Its log (one line per tensor, hundreds of lines) is captured rather than
dumped on the terminal, and condensed into one note about tensors that could not use a K-quant.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
from collections import Counter
from pathlib import Path

from strop.errors import StropError

# qtype -> llama.cpp's LLAMA_FTYPE_* value
KQUANT_FTYPES: dict[str, int] = {"q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}

_FALLBACK = re.compile(r"falling back to\s+(\w+)")


def import_llama_cpp():
    """llama-cpp-python, imported only when a K-quant is asked for: it is an optional extra."""
    try:
        import llama_cpp
    except ImportError as err:
        raise StropError(
            "K-quant GGUF export (q4_k_m, q5_k_m, q6_k) needs llama.cpp's quantizer: "
            "pip install 'strop[gguf]'  (or: CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install llama-cpp-python). "
            "f16, bf16, q8_0 and q4_0 export without it."
        ) from err
    return llama_cpp


def _fallback_note(log: str, qtype: str) -> str | None:
    """One line summarising llama.cpp's per-tensor fallbacks (rows not a multiple of 256 values)."""
    kinds = Counter(_FALLBACK.findall(log))
    if not kinds:
        return None
    used = ", ".join(f"{n} as {kind}" for kind, n in kinds.most_common())
    return (
        f"strop: note: {sum(kinds.values())} tensors have rows that are not a multiple of 256 values, "
        f"the K-quant block size, so llama.cpp stored them in another type for {qtype} ({used})."
    )


def kquantize(src: Path, dst: Path, qtype: str) -> None:
    """Requantize the GGUF `src` to the K-quant `qtype` at `dst` with llama.cpp's quantizer."""
    llama_cpp = import_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = KQUANT_FTYPES[qtype]
    params.nthread = os.cpu_count() or 1
    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lines.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    try:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    finally:
        from llama_cpp import _logger

        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
    log = "".join(lines)
    if rc != 0 or not dst.is_file():
        tail = "\n".join(log.strip().splitlines()[-5:])
        raise StropError(f"llama.cpp failed to quantize {src.name} to {qtype} (code {rc}):\n{tail}")
    note = _fallback_note(log, qtype)
    if note:
        print(note, file=sys.stderr)
