"""Examples → token ids and labels, with the loss on response tokens only.

Conversations are rendered with the tokenizer's chat template. Which characters belong to assistant
replies is found by rendering the conversation up to each reply (with and without it), then the token
offsets of the whole rendering decide each token's label. This works for any template whose renderings
of a conversation prefix are prefixes of the full rendering, which holds for the common families
(ChatML, Llama 3, Mistral, Gemma, Qwen); a template that breaks it gets a clear error.
"""

from __future__ import annotations

from typing import Any

from strop.errors import StropError

IGNORE = -100


def _render(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_spans(tokenizer, messages: list[dict[str, str]], where: str) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of every assistant reply (end-of-turn included)."""
    full = _render(tokenizer, messages)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:index], add_generation_prompt=True) if index else ""
        upto = _render(tokenizer, messages[: index + 1])
        if not (full.startswith(upto) and upto.startswith(before)):
            raise StropError(
                f"{where}: the chat template does not render conversation prefixes as prefixes; "
                "set chat_template: chatml or set train_on_inputs: true"
            )
        spans.append((len(before), len(upto)))
    return full, spans


def _labels_from_offsets(ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    labels = []
    for token, (start, end) in zip(ids, offsets):
        inside = any(lo <= start < hi or (start == end and lo < start <= hi) for lo, hi in spans)
        labels.append(token if inside else IGNORE)
    return labels


def _encode(tokenizer, text: str, add_special_tokens: bool) -> tuple[list[int], list[tuple[int, int]]]:
    if not getattr(tokenizer, "is_fast", False):
        raise StropError("strop needs a fast (Rust) tokenizer to locate response tokens")
    encoded = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    return list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]


def tokenize_example(example: dict[str, Any], tokenizer, train_on_inputs: bool, where: str) -> dict[str, list[int]]:
    """One example → {input_ids, labels}; labels are IGNORE outside responses unless train_on_inputs."""
    if "messages" in example:
        text, spans = assistant_spans(tokenizer, example["messages"], where)
        ids, offsets = _encode(tokenizer, text, add_special_tokens=False)
    elif "segments" in example:
        text = "".join(piece for piece, _ in example["segments"])
        ids, offsets = _encode(tokenizer, text, add_special_tokens=False)
        starts = [0]
        for piece, _ in example["segments"]:
            starts.append(starts[-1] + len(piece))
        spans = [(lo, hi) for (lo, hi), (_, label) in zip(zip(starts, starts[1:]), example["segments"]) if label]
    else:
        text = example["prompt"] + example["completion"]
        ids, offsets = _encode(tokenizer, text, add_special_tokens=True)
        if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
            ids.append(tokenizer.eos_token_id)
            offsets.append((len(text), len(text)))
        spans = [(len(example["prompt"]), len(text) + 1)]
    labels = list(ids) if train_on_inputs else _labels_from_offsets(ids, offsets, spans)
    return {"input_ids": ids, "labels": labels}


def chunk_long_text(tokens: dict[str, list[int]], limit: int) -> list[dict[str, list[int]]]:
    """Split a raw-text example into pieces of at most `limit` tokens (continued pretraining)."""
    ids, labels = tokens["input_ids"], tokens["labels"]
    return [{"input_ids": ids[i : i + limit], "labels": labels[i : i + limit]} for i in range(0, len(ids), limit)]
