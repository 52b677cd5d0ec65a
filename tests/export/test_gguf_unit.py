"""GGUF export without llama.cpp: the q/k permutation, tokenizer detection, file layout, errors."""

from __future__ import annotations

import builtins
from pathlib import Path

import gguf
import numpy as np
import pytest

from strop.errors import StropError
from strop.export.gguf_arch import llama3_rope_freqs, permute_rope_rows
from strop.export.gguf_export import export_gguf
from strop.export.gguf_vocab import detect_pre_tokenizer


def _rope_rotate_half(q: np.ndarray, pos: int, base: float) -> np.ndarray:
    """HF Llama rope on one head: dimension i pairs with i + d/2."""
    d = q.shape[0]
    theta = pos * base ** (-np.arange(0, d, 2) / d)
    a, b = q[: d // 2], q[d // 2 :]
    return np.concatenate([a * np.cos(theta) - b * np.sin(theta), b * np.cos(theta) + a * np.sin(theta)])


def _rope_adjacent(q: np.ndarray, pos: int, base: float) -> np.ndarray:
    """llama.cpp's normal (llama arch) rope on one head: dimension 2i pairs with 2i + 1."""
    d = q.shape[0]
    theta = pos * base ** (-np.arange(0, d, 2) / d)
    a, b = q[0::2], q[1::2]
    out = np.empty_like(q)
    out[0::2] = a * np.cos(theta) - b * np.sin(theta)
    out[1::2] = a * np.sin(theta) + b * np.cos(theta)
    return out


def test_permutation_turns_rotate_half_rope_into_adjacent_pair_rope() -> None:
    """After the permutation, llama.cpp's rope on the permuted weights gives the HF result with the
    same row reordering, for q and k alike, so every attention score q.k is unchanged."""
    rng = np.random.default_rng(0)
    n_heads, hd, dim = 3, 8, 12
    wq, wk = rng.normal(size=(n_heads * hd, dim)), rng.normal(size=(n_heads * hd, dim))
    x, y = rng.normal(size=dim), rng.normal(size=dim)
    pq, pk = permute_rope_rows(wq, n_heads), permute_rope_rows(wk, n_heads)
    for h in range(n_heads):
        rows = slice(h * hd, (h + 1) * hd)
        hf_q = _rope_rotate_half((wq @ x)[rows], 5, 10000.0)
        hf_k = _rope_rotate_half((wk @ y)[rows], 2, 10000.0)
        cpp_q = _rope_adjacent((pq @ x)[rows], 5, 10000.0)
        cpp_k = _rope_adjacent((pk @ y)[rows], 2, 10000.0)
        assert np.allclose(cpp_q, permute_rope_rows(hf_q, 1))
        assert np.isclose(hf_q @ hf_k, cpp_q @ cpp_k)


def test_permutation_of_biases_and_bad_shapes() -> None:
    bias = np.arange(16.0)
    assert permute_rope_rows(bias, 2).tolist() == [0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]
    with pytest.raises(StropError):
        permute_rope_rows(np.zeros((6, 4)), 2)


BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
QWEN2_RE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_RE = QWEN2_RE.replace(r"\p{N}|", r"\p{N}{1,3}|")


def _split(regex: str) -> dict:
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


@pytest.mark.parametrize(
    ("pre_tokenizer", "expected"),
    [
        (BYTE_LEVEL, "gpt-2"),
        ({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, BYTE_LEVEL]}, "smollm"),
        ({"type": "Sequence", "pretokenizers": [_split(QWEN2_RE), {**BYTE_LEVEL, "use_regex": False}]}, "qwen2"),
        ({"type": "Sequence", "pretokenizers": [_split(LLAMA3_RE), {**BYTE_LEVEL, "use_regex": False}]}, "llama-bpe"),
    ],
)
def test_pre_tokenizer_detection(pre_tokenizer: dict, expected: str) -> None:
    assert detect_pre_tokenizer({"pre_tokenizer": pre_tokenizer}) == expected


def test_unknown_pre_tokenizer_is_an_error() -> None:
    with pytest.raises(StropError, match="pre-tokenizer"):
        detect_pre_tokenizer({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [_split(r"\w+"), BYTE_LEVEL]}})


def test_llama3_rope_freqs_keep_high_and_scale_low_frequencies() -> None:
    config = {
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "rope_parameters": {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    }
    freqs = llama3_rope_freqs(config)
    assert freqs.shape == (64,) and freqs[0] == 1.0 and freqs[-1] == 8.0
    assert np.all(np.diff(freqs) >= 0)
    assert llama3_rope_freqs({"hidden_size": 64, "num_attention_heads": 4}) is None


def _fields(path: Path) -> tuple[dict, dict]:
    reader = gguf.GGUFReader(str(path))
    values = {k: f.contents() for k, f in reader.fields.items()}
    tensors = {t.name: t for t in reader.tensors}
    return values, tensors


@pytest.mark.slow
def test_llama_metadata_and_tensor_types(tiny_llama: Path, tmp_path: Path) -> None:
    out = export_gguf(tiny_llama, tmp_path / "m.gguf", "q8_0", show_progress=False)
    assert out.is_file() and not (tmp_path / "m.gguf.tmp").exists()
    kv, tensors = _fields(out)
    assert kv["general.architecture"] == "llama"
    assert kv["llama.block_count"] == 2 and kv["llama.embedding_length"] == 256
    assert kv["llama.attention.head_count"] == 4 and kv["llama.attention.head_count_kv"] == 2
    assert kv["llama.feed_forward_length"] == 512 and kv["llama.context_length"] == 1024
    assert kv["llama.rope.freq_base"] == pytest.approx(100000.0)
    assert kv["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    assert kv["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0
    assert kv["tokenizer.ggml.model"] == "gpt2" and len(kv["tokenizer.ggml.tokens"]) == 49152
    assert kv["tokenizer.ggml.eos_token_id"] == 2 and kv["tokenizer.ggml.add_bos_token"] is False
    assert "<|im_start|>" in kv["tokenizer.chat_template"]
    assert kv["tokenizer.ggml.token_type"][2] == gguf.TokenType.CONTROL
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert tensors["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    assert "output.weight" in tensors  # untied


@pytest.mark.slow
def test_tied_embeddings_write_no_output_tensor(tiny_qwen2_tied: Path, tmp_path: Path) -> None:
    model = tiny_qwen2_tied
    kv, tensors = _fields(export_gguf(model, tmp_path / "t.gguf", "f16", show_progress=False))
    assert "output.weight" not in tensors and "token_embd.weight" in tensors
    assert kv["general.architecture"] == "qwen2" and "blk.1.attn_v.bias" in tensors
    assert tensors["blk.0.attn_q.bias"].tensor_type == gguf.GGMLQuantizationType.F32


def test_errors_for_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(StropError, match="unknown GGUF type"):
        export_gguf(tmp_path, tmp_path / "x.gguf", "q3_k_s")
    with pytest.raises(StropError, match="config.json"):
        export_gguf(tmp_path, tmp_path / "x.gguf", "f16")
    (tmp_path / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"]}')
    with pytest.raises(StropError, match="supported: "):
        export_gguf(tmp_path, tmp_path / "x.gguf", "f16")
    assert not list(tmp_path.glob("*.gguf*"))


def test_kquant_without_llama_cpp_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_llama_cpp(name: str, *args, **kwargs):
        if name == "llama_cpp":
            raise ImportError("no llama_cpp")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_llama_cpp)
    with pytest.raises(StropError, match=r"strop\[gguf\]"):
        export_gguf(tmp_path, tmp_path / "x.gguf", "q4_k_m")


@pytest.mark.slow
def test_cli_export_writes_gguf_and_modelfile(
    tiny_llama: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from strop.commands import export as command

    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers())
    out = tmp_path / "out" / "tiny.gguf"
    args = parser.parse_args(["export", str(tiny_llama), "--gguf", "q4_0", "--out", str(out), "--temperature", "0.3"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert f"GGUF (q4_0): {out}" in printed and "MiB" in printed and " s" in printed
    modelfile = (out.parent / "Modelfile").read_text()
    assert "FROM ./tiny.gguf" in modelfile and "PARAMETER temperature 0.3" in modelfile
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in modelfile

    args = parser.parse_args(["export", str(tiny_llama), "--gguf", "f16", "--no-modelfile"])
    assert args.func(args) == 0
    assert (tiny_llama / f"{tiny_llama.name}-f16.gguf").is_file()
    (tiny_llama / f"{tiny_llama.name}-f16.gguf").unlink()  # the fixture is shared by other tests


def test_sentencepiece_style_vocab_types_and_scores() -> None:
    """Llama-2-style tokenizer.json (BPE + byte fallback + ▁ spaces) maps to llama.cpp's "llama"
    model; scores follow merge ranks. Not run through llama.cpp here (no such tokenizer offline)."""
    from strop.export.gguf_vocab import _is_byte_level, _is_sentencepiece_bpe, _spm_tokens

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x00>": 3, "▁": 4, "a": 5, "b": 6, "▁a": 7, "ab": 8}
    tj = {
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}]},
        "pre_tokenizer": None,
        "model": {
            "type": "BPE",
            "byte_fallback": True,
            "unk_token": "<unk>",
            "vocab": vocab,
            "merges": [["▁", "a"], ["a", "b"]],
        },
        "added_tokens": [{"id": 1, "content": "<s>", "special": True}, {"id": 2, "content": "</s>", "special": True}],
    }
    assert _is_sentencepiece_bpe(tj) and not _is_byte_level(tj)
    tokens, types, scores = _spm_tokens(tj, 10)
    assert tokens[:3] == ["<unk>", "<s>", "</s>"] and tokens[9] == "[PAD9]"
    assert types[:4] == [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL, gguf.TokenType.BYTE]
    assert types[5] == gguf.TokenType.NORMAL and types[9] == gguf.TokenType.UNUSED
    assert scores[7] > scores[8]  # "▁a" comes from the first merge, so it merges first


def test_kquant_fallback_note() -> None:
    from strop.export.kquant import _fallback_note

    log = (
        "warning: blk.0.attn_q.weight - ncols 576 not divisible by 256 (required for type q4_K) -> falling back to q5_0\n"
        "warning: blk.0.ffn_down.weight - ncols 576 not divisible by 256 (required for type q6_K) -> falling back to    q8_0\n"
    )
    note = _fallback_note(log, "q4_k_m")
    assert "2 tensors" in note and "1 as q5_0" in note and "1 as q8_0" in note
    assert _fallback_note("all good", "q4_k_m") is None
