"""Fixtures for the merge tests (helpers live in merge_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from merge_helpers import make_model


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A base model and two fine-tunes of it, plus an unrelated-shape model and a tied one."""
    root = tmp_path_factory.mktemp("models")
    base = make_model(root / "base", 0)
    return {
        "base": base,
        "a": make_model(root / "a", 1, base=base),
        "b": make_model(root / "b", 2, base=base),
        "other_shape": make_model(root / "other_shape", 3, intermediate_size=96),
        "tied": make_model(root / "tied", 4, tie_word_embeddings=True),
        "tied_b": make_model(root / "tied_b", 5, tie_word_embeddings=True),
    }
