"""Tokenizer metadata for GGUF files.

llama.cpp does not read tokenizer.json: the whole vocabulary, the merges and the special-token ids
travel inside the GGUF as `tokenizer.ggml.*` keys, and the pre-tokenizer (the regex that splits text
before BPE) is chosen by *name* (`tokenizer.ggml.pre`). A wrong pre-tokenizer name does not fail, it
silently tokenizes differently from the model's training, so unknown tokenizers are an error here
rather than a guess.

Two tokenizer families are supported:
- byte-level BPE ("gpt2" model in llama.cpp): GPT-2, SmolLM/StarCoder, Qwen2, Llama-3;
- sentencepiece-style BPE with byte fallback ("llama" model): Llama-2, Mistral v0.1, TinyLlama.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

from strop.errors import StropError

# Pre-tokenizer split regexes as they appear in tokenizer.json, keyed by the fragment that tells
# them apart, mapped to the llama.cpp pre-tokenizer name that implements the same split.
_QWEN2_DIGITS = r"\p{N}|"
_LLAMA3_DIGITS = r"\p{N}{1,3}"


@dataclass
class VocabInfo:
    """Everything the GGUF writer needs to reproduce the HF tokenizer inside llama.cpp."""

    model: str  # "gpt2" or "llama"
    pre: str | None
    tokens: list[str]
    types: list[int]
    merges: list[str] = field(default_factory=list)
    scores: list[float] | None = None
    special_ids: dict[str, int] = field(default_factory=dict)
    add_bos: bool = False
    add_eos: bool = False
    add_space_prefix: bool | None = None
    chat_template: str | None = None


def _components(node: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Flatten a tokenizers `Sequence` node into its parts (a single node is a one-element list)."""
    if not node:
        return []
    if node.get("type") == "Sequence":
        parts = node.get("pretokenizers") or node.get("normalizers") or []
        return [leaf for part in parts for leaf in _components(part)]
    return [node]


def _split_regex(part: dict[str, Any]) -> str:
    pattern = part.get("pattern") or {}
    return pattern.get("Regex") or pattern.get("String") or ""


def detect_pre_tokenizer(tokenizer_json: dict[str, Any]) -> str:
    """Name the llama.cpp pre-tokenizer equivalent to this byte-level BPE tokenizer's splitting.

    Recognised structurally from tokenizer.json rather than by hashing test tokenizations, so a
    fine-tuned copy of a known tokenizer is recognised without a table of hashes.
    """
    parts = _components(tokenizer_json.get("pre_tokenizer"))
    kinds = [p.get("type") for p in parts]
    splits = [_split_regex(p) for p in parts if p.get("type") == "Split"]
    byte_level = [p for p in parts if p.get("type") == "ByteLevel"]
    if splits:
        regex = splits[0]
        if _LLAMA3_DIGITS in regex and "(?i:'s|'t|'re|'ve|'m|'ll|'d)" in regex:
            return "llama-bpe"
        if _QWEN2_DIGITS in regex and "(?i:'s|'t|'re|'ve|'m|'ll|'d)" in regex:
            return "qwen2"
        raise StropError(
            f"unsupported pre-tokenizer split regex {regex!r}: llama.cpp would tokenize text differently "
            "from the model. Supported byte-level BPE families: GPT-2, SmolLM/StarCoder, Qwen2, Llama-3."
        )
    if byte_level and byte_level[0].get("use_regex", True):
        digits = [p for p in parts if p.get("type") == "Digits"]
        if digits and digits[0].get("individual_digits"):
            return "smollm"
        if kinds == ["ByteLevel"]:
            return "gpt-2"
    raise StropError(f"unsupported pre-tokenizer {kinds}: cannot map it to a llama.cpp pre-tokenizer")


def _is_byte_level(tj: dict[str, Any]) -> bool:
    nodes = _components(tj.get("pre_tokenizer")) + _components(tj.get("decoder"))
    return any(n.get("type") == "ByteLevel" for n in nodes)


def _is_sentencepiece_bpe(tj: dict[str, Any]) -> bool:
    model = tj.get("model") or {}
    nodes = _components(tj.get("pre_tokenizer")) + _components(tj.get("normalizer"))
    spaces = any(n.get("type") in {"Metaspace", "Prepend"} or n.get("content") == "▁" for n in nodes)
    decoder = json.dumps(tj.get("decoder") or {})
    return bool(model.get("byte_fallback")) and (spaces or "▁" in decoder)


def _merge_strings(merges: list[Any]) -> list[str]:
    """tokenizers writes merges either as "a b" strings (old) or as ["a", "b"] pairs (new)."""
    return [m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in merges]


def _id_table(tj: dict[str, Any], vocab_size: int) -> tuple[list[str | None], dict[int, dict[str, Any]]]:
    vocab: dict[str, int] = tj["model"]["vocab"]
    added = {int(t["id"]): t for t in tj.get("added_tokens", [])}
    size = max([vocab_size, len(vocab), *(i + 1 for i in added)])
    table: list[str | None] = [None] * size
    for text, idx in vocab.items():
        table[idx] = text
    for idx, tok in added.items():
        table[idx] = tok["content"]
    return table, added


def _bpe_tokens(tj: dict[str, Any], vocab_size: int) -> tuple[list[str], list[int]]:
    table, added = _id_table(tj, vocab_size)
    tokens, types = [], []
    for idx, text in enumerate(table):
        if text is None:
            tokens.append(f"[PAD{idx}]")
            types.append(gguf.TokenType.UNUSED)
        elif idx in added:
            tokens.append(text)
            types.append(gguf.TokenType.CONTROL if added[idx].get("special") else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(text)
            types.append(gguf.TokenType.NORMAL)
    return tokens, [int(t) for t in types]


def _spm_tokens(tj: dict[str, Any], vocab_size: int) -> tuple[list[str], list[int], list[float]]:
    """Sentencepiece-style vocab: llama.cpp's SPM tokenizer merges by piece score, so each piece
    scores minus the rank of the first merge that produces it, which reproduces the BPE merge order."""
    table, added = _id_table(tj, vocab_size)
    rank: dict[str, int] = {}
    for r, merge in enumerate(_merge_strings(tj["model"].get("merges", []))):
        rank.setdefault(merge.replace(" ", "", 1), r)
    unk = tj["model"].get("unk_token")
    tokens, types, scores = [], [], []
    for idx, text in enumerate(table):
        if text is None:
            tokens.append(f"[PAD{idx}]")
            types.append(gguf.TokenType.UNUSED)
            scores.append(-1e9)
            continue
        tokens.append(text)
        scores.append(-float(rank.get(text, 0)))
        if idx in added and added[idx].get("special") and text != unk:
            types.append(gguf.TokenType.CONTROL)
        elif text == unk:
            types.append(gguf.TokenType.UNKNOWN)
        elif len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            types.append(gguf.TokenType.BYTE)
        elif idx in added:
            types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    return tokens, [int(t) for t in types], scores


def _special_ids_and_flags(tok: Any) -> tuple[dict[str, int], bool, bool, str | None]:
    """Special-token ids, add_bos/add_eos and the chat template, as the HF tokenizer really behaves.

    add_bos is read off an actual encoding rather than a config flag, because tokenizers declare it
    in several places (post_processor, add_bos_token, the tokenizer class default).
    """
    ids = {
        name: getattr(tok, f"{name}_token_id")
        for name in ("bos", "eos", "unk", "pad")
        if getattr(tok, f"{name}_token_id", None) is not None
    }
    plain = tok("a", add_special_tokens=False)["input_ids"]
    full = tok("a", add_special_tokens=True)["input_ids"]
    add_bos = "bos" in ids and len(full) > len(plain) and full[0] == ids["bos"]
    add_eos = "eos" in ids and len(full) > len(plain) and full[-1] == ids["eos"]
    template = tok.chat_template if isinstance(tok.chat_template, str) else None
    return ids, add_bos, add_eos, template


def _load_tokenizer(model_dir: Path) -> tuple[Any, dict[str, Any]]:
    """The HF tokenizer and the tokenizers-library JSON it actually runs.

    The JSON comes from the loaded tokenizer, not from tokenizer.json on disk: transformers 5 rebuilds
    the pre-tokenizer for some tokenizer classes (Qwen2Tokenizer applies the Qwen2 split regex
    whatever the file says), and llama.cpp must reproduce what transformers does.
    """
    from transformers import AutoTokenizer

    if not (model_dir / "tokenizer.json").is_file():
        raise StropError(
            f"{model_dir} has no tokenizer.json; GGUF export needs a fast (tokenizers) tokenizer. "
            "Load the tokenizer with AutoTokenizer and save_pretrained it into the model folder."
        )
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        return tok, json.loads(backend.to_str())
    return tok, json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))


def read_vocab(model_dir: str | Path, vocab_size: int) -> VocabInfo:
    """Read the HF tokenizer in `model_dir` into GGUF tokenizer metadata (raises StropError if unsupported)."""
    tok, tj = _load_tokenizer(Path(model_dir))
    if (tj.get("model") or {}).get("type") != "BPE":
        raise StropError(f"unsupported tokenizer model {tj.get('model', {}).get('type')!r}: only BPE tokenizers export")
    special, add_bos, add_eos, template = _special_ids_and_flags(tok)
    if _is_byte_level(tj):
        tokens, types = _bpe_tokens(tj, vocab_size)
        merges = _merge_strings(tj["model"].get("merges", []))
        pre = detect_pre_tokenizer(tj)
        return VocabInfo("gpt2", pre, tokens, types, merges, None, special, add_bos, add_eos, False, template)
    if _is_sentencepiece_bpe(tj):
        tokens, types, scores = _spm_tokens(tj, vocab_size)
        return VocabInfo("llama", "default", tokens, types, [], scores, special, add_bos, add_eos, True, template)
    raise StropError("unsupported tokenizer: neither byte-level BPE nor sentencepiece BPE with byte fallback")


def write_vocab(writer: gguf.GGUFWriter, vocab: VocabInfo) -> None:
    """Add the tokenizer keys to a GGUF writer."""
    writer.add_tokenizer_model(vocab.model)
    if vocab.pre:
        writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    if vocab.merges:
        writer.add_token_merges(vocab.merges)
    adders = {
        "bos": writer.add_bos_token_id,
        "eos": writer.add_eos_token_id,
        "unk": writer.add_unk_token_id,
        "pad": writer.add_pad_token_id,
    }
    for name, token_id in vocab.special_ids.items():
        adders[name](int(token_id))
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.add_space_prefix is not None:
        writer.add_add_space_prefix(vocab.add_space_prefix)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)
