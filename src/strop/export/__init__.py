"""Getting models out of strop: LoRA merging, GGUF export for llama.cpp/Ollama, Ollama Modelfiles.

Imports are lazy (see __getattr__) so `strop --help` does not pay for torch and gguf.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "merge_lora": "strop.export.merge_lora",
    "export_gguf": "strop.export.gguf_export",
    "write_modelfile": "strop.export.modelfile",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)
