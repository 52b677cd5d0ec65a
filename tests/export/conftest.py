"""Shared fixtures for export tests: SmolLM2's byte-level BPE tokenizer (from the smollm2_dir fixture of
tests/conftest.py) and tiny random Llama/Qwen2 models built on it."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_models import make_tiny_model


@pytest.fixture(scope="session")
def smol_tokenizer_dir(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with SmolLM2's tokenizer files only (tiny models copy everything in it)."""
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("smol_tokenizer")
    AutoTokenizer.from_pretrained(str(smollm2_dir)).save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_llama(smol_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model("llama", smol_tokenizer_dir, tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_qwen2(smol_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model("qwen2", smol_tokenizer_dir, tmp_path_factory.mktemp("tiny_qwen2"))


@pytest.fixture
def tiny_qwen2_tied(smol_tokenizer_dir: Path, tmp_path: Path) -> Path:
    return make_tiny_model("qwen2", smol_tokenizer_dir, tmp_path / "tied", tied=True)
