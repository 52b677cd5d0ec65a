"""Exported tiny random Llama and Qwen2 models, run by llama.cpp, against transformers.

What is asserted, and why:
- f32: llama.cpp's logits (run with an f32 KV cache) match transformers' to within 1e-3 of the
  logit standard deviation at every position (measured: ~3e-5), and 16 greedy tokens agree on 3 prompts. This is the exactness check for the
  tensor mapping, the q/k permutation (a wrong one changes every logit) and the hparams.
- f16: 16 greedy tokens agree on 3 prompts, and teacher-forced next-token argmax agrees at >= 98% of
  the positions of a held-out text. Random tiny models have many near-tied logits, so a single
  f16 rounding can flip an argmax; the greedy check uses fixed prompts where no near-tie occurs,
  the agreement threshold leaves room for the rare flip.
- q8_0 / q4_0 / q4_k_m: next-token agreement over the held-out text, with loose floors. Random
  Gaussian weights have no structure for 4-bit quantization to preserve and random logits have small
  top-1 margins, so a 4-bit random model agrees with its fp32 self on only ~30-40% of positions
  (chance would be 1/49152); the floors only prove the file is the same model. The meaningful
  quantization figures come from the real SmolLM2 in test_smollm2_gguf.py.
Token ids go into both runtimes; tokenization is compared separately.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _export_llamacpp import (
    HELD_OUT_TEXT,
    argmax_agreement,
    hf_greedy,
    hf_logits,
    llama_greedy,
    llama_logits,
    load_llama,
)

from strop.export.gguf_export import export_gguf

pytest.importorskip("llama_cpp")

PROMPTS = ["The capital of France is", "def fibonacci(n):\n", "Once upon a time, in a small village"]
# floor for teacher-forced next-token agreement with the fp32 HF model
FLOORS = {"f32": 0.99, "f16": 0.98, "q8_0": 0.85, "q4_0": 0.2, "q4_k_m": 0.2}

pytestmark = pytest.mark.slow

_hf_cache: dict[Path, tuple] = {}


def _hf(model_dir: Path):
    if model_dir not in _hf_cache:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        _hf_cache[model_dir] = (model, AutoTokenizer.from_pretrained(str(model_dir)))
    return _hf_cache[model_dir]


@pytest.fixture(params=["llama", "qwen2"])
def tiny(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(f"tiny_{request.param}")


@pytest.mark.parametrize("qtype", ["f32", "f16", "q8_0", "q4_0", "q4_k_m"])
def test_llama_cpp_matches_transformers(tiny: Path, qtype: str, tmp_path: Path) -> None:
    model, tok = _hf(tiny)
    path = export_gguf(tiny, tmp_path / f"tiny-{qtype}.gguf", qtype, show_progress=False)
    llm = load_llama(path)
    ids = tok(HELD_OUT_TEXT, add_special_tokens=False)["input_ids"]
    ref, got = hf_logits(model, ids), llama_logits(llm, ids)
    agreement = argmax_agreement(ref, got)
    rel_err = float(np.abs(ref - got).max() / ref.std())
    print(
        f"\n{tiny.name} {qtype}: next-token agreement {agreement:.3f} over {len(ids)} tokens, "
        f"max |logit diff| / logit std = {rel_err:.2e}, file {path.stat().st_size / 2**20:.1f} MiB"
    )
    assert agreement >= FLOORS[qtype]
    if qtype == "f32":
        assert rel_err < 1e-3
    if qtype in ("f32", "f16"):
        for prompt in PROMPTS:
            pids = tok(prompt, add_special_tokens=False)["input_ids"]
            assert llama_greedy(llm, pids, 16) == hf_greedy(model, pids, 16), prompt


def test_llama_cpp_tokenizes_like_transformers(tiny: Path, tmp_path: Path) -> None:
    """Same ids from both runtimes, special tokens included. For the Qwen2 model transformers applies
    the Qwen2 split regex (pre-tokenizer "qwen2"), for the Llama one SmolLM2's byte-level regex."""
    _, tok = _hf(tiny)
    llm = load_llama(export_gguf(tiny, tmp_path / "t.gguf", "q8_0", show_progress=False))
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "Hi there! 2+2=?"}], tokenize=False, add_generation_prompt=True
    )
    for text in (HELD_OUT_TEXT, chat, "  leading spaces,\ttabs\n\nand ümlauts — 12345 😀"):
        expected = tok(text, add_special_tokens=False)["input_ids"]
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == expected, text[:40]
