"""The real SmolLM2-135M-Instruct, exported by strop and run by llama.cpp.

The packaged Q4_1 GGUF is dequantized by transformers into an fp32 HF folder (the smollm2_dir
fixture), exported again by strop, and run by llama.cpp. At F16 the greedy chat answers must be
identical token for token to transformers' fp32 greedy answers. For the quantized types the share
of identical teacher-forced next-token predictions over a held-out text is measured, printed, and
held to a floor.
"""

from __future__ import annotations

import time
from pathlib import Path

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
pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHAT_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Give me three tips for learning Python.",
]
# Measured (352 tokens): q8_0 0.938, q6_k 0.935, q5_k_m 0.869, q4_k_m 0.869, q4_0 0.693. A 135M model
# has small top-1 margins, so even q8_0 flips ~6% of argmaxes; floors sit a few points below.
FLOORS = {"q8_0": 0.9, "q6_k": 0.9, "q5_k_m": 0.8, "q4_k_m": 0.8, "q4_0": 0.6}

_cache: dict[str, object] = {}


def _hf(model_dir: Path):
    if "model" not in _cache:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _cache["model"] = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        _cache["tok"] = AutoTokenizer.from_pretrained(str(model_dir))
    return _cache["model"], _cache["tok"]


def test_f16_greedy_chat_answers_match_exactly(smollm2_dir: Path, tmp_path: Path) -> None:
    model, tok = _hf(smollm2_dir)
    start = time.perf_counter()
    path = export_gguf(smollm2_dir, tmp_path / "smollm2-f16.gguf", "f16", show_progress=False)
    print(f"\nf16 export: {time.perf_counter() - start:.1f} s, {path.stat().st_size / 2**20:.1f} MiB")
    llm = load_llama(path, n_ctx=1024)
    eos = {tok.eos_token_id}
    for prompt in CHAT_PROMPTS:
        text = tok.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids
        expected = hf_greedy(model, ids, 48, eos)
        got = llama_greedy(llm, ids, 48, eos)
        print(f"  {prompt!r} -> {tok.decode(got, skip_special_tokens=True)!r}")
        assert tok.decode(got) == tok.decode(expected)
        assert got == expected


@pytest.mark.parametrize("qtype", ["q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0"])
def test_quantized_next_token_agreement(smollm2_dir: Path, qtype: str, tmp_path: Path) -> None:
    model, tok = _hf(smollm2_dir)
    start = time.perf_counter()
    path = export_gguf(smollm2_dir, tmp_path / f"smollm2-{qtype}.gguf", qtype, show_progress=False)
    seconds = time.perf_counter() - start
    ids = tok(HELD_OUT_TEXT, add_special_tokens=False)["input_ids"]
    agreement = argmax_agreement(hf_logits(model, ids), llama_logits(load_llama(path), ids))
    print(
        f"\n{qtype}: export {seconds:.1f} s, {path.stat().st_size / 2**20:.1f} MiB, "
        f"next-token agreement with fp32 transformers {agreement:.3f} over {len(ids)} tokens"
    )
    assert agreement >= FLOORS[qtype]
