"""Dataset row formats, each turned into one of two shapes the tokenizer understands.

- a conversation: {"messages": [{"role", "content"}, ...]} (alpaca, chat, sharegpt), formatted by the
  tokenizer's chat template so training matches how the model is prompted at inference;
- a raw text pair: {"prompt": str, "completion": str} (completion, and text with an empty prompt).

Each converter validates its fields and raises a StropError naming the row's file, line and field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from strop.errors import StropError

Example = dict[str, Any]
_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "model": "assistant",
}
_ROLES = {"system", "user", "assistant", "tool"}


def _field(row: dict[str, Any], name: str, where: str, required: bool = True) -> str:
    if name not in row or row[name] is None:
        if required:
            raise StropError(f"{where}: missing field '{name}'")
        return ""
    value = row[name]
    if not isinstance(value, str):
        raise StropError(f"{where}: field '{name}' must be a string, got {type(value).__name__}")
    return value


def alpaca(row: dict[str, Any], where: str) -> Example:
    instruction = _field(row, "instruction", where)
    extra = _field(row, "input", where, required=False)
    output = _field(row, "output", where)
    if not output.strip():
        raise StropError(f"{where}: field 'output' is empty")
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    system = _field(row, "system", where, required=False)
    if system:
        messages.insert(0, {"role": "system", "content": system})
    return {"messages": messages}


def _message(item: Any, where: str, index: int, sharegpt: bool) -> dict[str, str]:
    loc = f"{where}: {'conversations' if sharegpt else 'messages'}[{index}]"
    if not isinstance(item, dict):
        raise StropError(f"{loc} must be an object")
    role_key, content_key = ("from", "value") if sharegpt else ("role", "content")
    role, content = item.get(role_key), item.get(content_key)
    if sharegpt:
        role = _SHAREGPT_ROLES.get(str(role), role)
    if role not in _ROLES:
        raise StropError(f"{loc}: field '{role_key}' must be one of {sorted(_ROLES)}, got {role!r}")
    if not isinstance(content, str):
        raise StropError(f"{loc}: field '{content_key}' must be a string, got {type(content).__name__}")
    return {"role": role, "content": content}


def chat(row: dict[str, Any], where: str) -> Example:
    """OpenAI-style `messages`; ShareGPT `conversations` ({from: human/gpt, value}) are converted."""
    sharegpt = "messages" not in row and "conversations" in row
    items = row.get("conversations" if sharegpt else "messages")
    if items is None:
        raise StropError(f"{where}: missing field 'messages' (or ShareGPT 'conversations')")
    if not isinstance(items, list) or not items:
        raise StropError(f"{where}: field '{'conversations' if sharegpt else 'messages'}' must be a non-empty list")
    messages = [_message(item, where, i, sharegpt) for i, item in enumerate(items)]
    if not any(m["role"] == "assistant" for m in messages):
        raise StropError(f"{where}: the conversation has no assistant message to learn from")
    for index, message in enumerate(messages):
        if message["role"] == "assistant" and not message["content"].strip():
            key = "conversations" if sharegpt else "messages"
            raise StropError(
                f"{where}: {key}[{index}]: the assistant reply is empty (nothing to learn from; "
                "remove the turn or the row)"
            )
    return {"messages": messages}


def completion(row: dict[str, Any], where: str) -> Example:
    prompt, text = _field(row, "prompt", where), _field(row, "completion", where)
    if not text:
        raise StropError(f"{where}: field 'completion' is empty")
    return {"prompt": prompt, "completion": text}


def text(row: dict[str, Any], where: str) -> Example:
    body = _field(row, "text", where)
    if not body.strip():
        raise StropError(f"{where}: field 'text' is empty")
    return {"prompt": "", "completion": body}


def input_output(row: dict[str, Any], where: str) -> Example:
    """Axolotl's `input_output`: {segments: [{text, label}]}, the text joined as written (no template)
    and only the segments with label true trained."""
    segments = row.get("segments")
    if not isinstance(segments, list) or not segments:
        raise StropError(f"{where}: field 'segments' must be a non-empty list of {{text, label}}")
    out = []
    for index, item in enumerate(segments):
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise StropError(f"{where}: segments[{index}] must be an object with a string 'text'")
        out.append((item["text"], bool(item.get("label", True))))
    if not any(label and text.strip() for text, label in out):
        raise StropError(f"{where}: no segment has label true: nothing to learn from")
    return {"segments": out}


FORMATS: dict[str, Callable[[dict[str, Any], str], Example]] = {
    "alpaca": alpaca,
    "chat": chat,
    "sharegpt": chat,
    "completion": completion,
    "text": text,
    "input_output": input_output,
}
