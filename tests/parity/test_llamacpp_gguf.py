"""`strop export --gguf f16` against llama.cpp's own convert_hf_to_gguf.py on the same tiny Llama.

The converter ships in llama-cpp-python's source distribution; `make test` extracts it into .venv/llama.cpp
(tools/fetch_llamacpp_converter.py; STROP_LLAMACPP_CONVERTER names another folder). It runs as a subprocess
with the venv's Python, as a user would run it. The model is SmolLM2's architecture (Llama) with SmolLM2's
tokenizer and chat template. Both files must hold the same tensors (names, shapes, types, bytes) and the
same metadata, with three documented exceptions (README, "Parity with the reference implementations"):

- descriptive general.* names, which each tool derives its own way (NAME_KEYS);
- keys strop writes explicitly with llama.cpp's default value where the converter leaves them out
  (EXPLICIT_DEFAULTS);
- tokenizer.ggml.pre: strop names the pre-tokenizer from tokenizer.json's structure (this folder's is a bare
  ByteLevel, GPT-2's split: "gpt-2"); the converter from a hash of its test tokenizations, which for this
  vocabulary matches its "smollm" entry (GPT-2's split after isolating every Unicode digit). llama.cpp is
  run on both files: strop's gives transformers' tokens on every text; the converter's gives them too
  except where a space precedes a non-ASCII digit (" ²", " ١"), where its digit split is not this
  tokenizer's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _export_llamacpp import CONVERTER, read_gguf

from strop.export.gguf_export import export_gguf

NAME_KEYS = {"general.name", "general.basename", "general.size_label", "general.finetune", "general.version"}
EXPLICIT_DEFAULTS = {"tokenizer.ggml.add_eos_token": False, "tokenizer.ggml.add_space_prefix": False}
PRE_NAMES = ("gpt-2", "smollm")  # (strop's, the converter's)
TEXTS = [
    "3 33 333 3333 33333 1314151 3.3 3..3 x1y22z 2026-12-02",
    " 12 apples\n\n  and 7 pears\t\t 0",
    "🚀 (normal) 😶\u200d🌫️ ✅ 🦙 我想在apple工作1314151天～ нещо I've 'RE you sure? We'Ve a'lL",
    "<|im_start|>user\nWhat is 17 * 23?<|im_end|>\n",
]
SPACE_THEN_UNICODE_DIGIT = "x² ½ ١٢٣ and ²"

pytestmark = pytest.mark.skipif(
    not CONVERTER.is_file(),
    reason=f"llama.cpp's converter is not at {CONVERTER}: run "
    "`make test` (or python tools/fetch_llamacpp_converter.py .venv/llama.cpp)",
)


@pytest.fixture(scope="module")
def both_files(smol_tiny_llama, tmp_path_factory) -> tuple[Path, Path]:
    """(strop's file, the converter's file) for the same model folder."""
    out = tmp_path_factory.mktemp("gguf")
    theirs = out / "llamacpp.gguf"
    run = subprocess.run(
        [sys.executable, str(CONVERTER), str(smol_tiny_llama), "--outtype", "f16", "--outfile", str(theirs)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return export_gguf(smol_tiny_llama, out / "strop.gguf", "f16", show_progress=False), theirs


@pytest.fixture(scope="module")
def both_read(both_files):
    return tuple(read_gguf(path) for path in both_files)


def test_same_tensors(both_read):
    (_, ours), (_, theirs) = both_read
    assert sorted(ours) == sorted(theirs)
    for name, (kind, shape, data) in theirs.items():
        assert ours[name][:2] == (kind, shape), name
        assert np.array_equal(ours[name][2], data), name


def test_same_metadata_tokenizer_and_chat_template(both_read):
    (ours, _), (theirs, _) = both_read
    assert theirs["tokenizer.chat_template"] == ours["tokenizer.chat_template"]
    assert (ours["tokenizer.ggml.pre"], theirs["tokenizer.ggml.pre"]) == PRE_NAMES
    for key, default in EXPLICIT_DEFAULTS.items():
        assert ours[key] == default and key not in theirs, key
    keys = (set(ours) | set(theirs)) - NAME_KEYS - set(EXPLICIT_DEFAULTS) - {"tokenizer.ggml.pre"}
    differ = {k: (str(ours.get(k))[:80], str(theirs.get(k))[:80]) for k in sorted(keys) if ours.get(k) != theirs.get(k)}
    assert not differ


def test_llamacpp_tokenizes_like_transformers(both_files, smol_tiny_llama):
    """The pre-tokenizer names differ; what matters is the tokens llama.cpp produces from each file."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by `make test`")
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(smol_tiny_llama))
    ours, theirs = (llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False) for path in both_files)

    def tokens(model, text: str) -> list[int]:
        return model.tokenize(text.encode(), add_bos=False, special=True)

    for text in [*TEXTS, SPACE_THEN_UNICODE_DIGIT]:
        assert tokens(ours, text) == hf(text, add_special_tokens=False)["input_ids"], text
    for text in TEXTS:
        assert tokens(theirs, text) == hf(text, add_special_tokens=False)["input_ids"], text
    assert (
        tokens(theirs, SPACE_THEN_UNICODE_DIGIT) != hf(SPACE_THEN_UNICODE_DIGIT, add_special_tokens=False)["input_ids"]
    )
