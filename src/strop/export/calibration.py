"""Calibration and evaluation text for GPTQ/AWQ exports, read from a file of prompts.

GPTQ and AWQ fit the quantization to the activations the model sees, so the calibration text should look
like what the model will be asked: a chat model is best calibrated on chat-formatted rows. A `.txt` file
gives one text per paragraph (blocks separated by blank lines). A dataset file (.jsonl, .json, .parquet,
.csv) gives one text per row, from the first of these fields that is present: `messages` (or ShareGPT
`conversations`) and `instruction` (+ `input`, `output`) are rendered with the tokenizer's chat template;
`text`, and `prompt` (+ `completion`), are used as written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from strop.errors import StropError

_SHAREGPT = {"human": "user", "gpt": "assistant", "model": "assistant"}


def _string(row: dict[str, Any], name: str, where: str) -> str:
    value = row.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise StropError(f"{where}: field '{name}' must be a string, got {type(value).__name__}")
    return value


def _messages(items: Any, where: str, key: str) -> list[dict[str, str]]:
    if not isinstance(items, list) or not items:
        raise StropError(f"{where}: field '{key}' must be a non-empty list")
    role_key, content_key = ("from", "value") if key == "conversations" else ("role", "content")
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get(content_key), str):
            raise StropError(f"{where}: {key}[{index}] must be an object with a string '{content_key}'")
        role = str(item.get(role_key))
        out.append({"role": _SHAREGPT.get(role, role), "content": item[content_key]})
    return out


def _chat(tokenizer, messages: list[dict[str, str]], where: str) -> str:
    if not getattr(tokenizer, "chat_template", None):
        return "\n\n".join(m["content"] for m in messages)
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=messages[-1]["role"] != "assistant"
        )
    except Exception as err:  # a template that rejects the roles raises its own error types
        raise StropError(f"{where}: the chat template cannot render this row: {err}") from err


def row_text(row: dict[str, Any], where: str, tokenizer) -> str:
    """The text one dataset row contributes (see the module docstring for the fields)."""
    for key in ("messages", "conversations"):
        if key in row:
            return _chat(tokenizer, _messages(row[key], where, key), where)
    if "instruction" in row:
        user = _string(row, "instruction", where)
        extra = _string(row, "input", where)
        messages = [{"role": "user", "content": f"{user}\n\n{extra}" if extra.strip() else user}]
        if _string(row, "output", where):
            messages.append({"role": "assistant", "content": row["output"]})
        return _chat(tokenizer, messages, where)
    if "text" in row:
        return _string(row, "text", where)
    if "prompt" in row:
        return _string(row, "prompt", where) + _string(row, "completion", where)
    raise StropError(f"{where}: no text to calibrate on: give 'messages', 'instruction', 'text' or 'prompt'")


def _paragraphs(path: Path) -> list[str]:
    try:
        content = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise StropError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x}); save the file as UTF-8") from err
    except OSError as err:
        raise StropError(f"{path}: cannot read the calibration file: {err.strerror or err}") from err
    blocks = [block.strip() for block in content.replace("\r\n", "\n").split("\n\n")]
    return [block for block in blocks if block]


def read_texts(path: str | Path, tokenizer, what: str = "--calibration") -> list[str]:
    """All non-empty texts of the file; a StropError naming the file (and line) when there are none or a
    row cannot be read."""
    from strop.data.readers import read_rows

    path = Path(path)
    if not path.is_file():
        raise StropError(f"{what}: no such file: {path}")
    if path.suffix in {".txt", ".md"}:
        texts = _paragraphs(path)
    else:
        texts = [row_text(row, where, tokenizer) for where, row in read_rows(str(path))]
    texts = [text for text in texts if text.strip()]
    if not texts:
        raise StropError(f"{what}: {path} holds no text")
    return texts


def split_held_out(texts: list[str]) -> tuple[list[str], list[str]]:
    """(calibration, held-out) when no separate evaluation file is given: every tenth text (at least one)
    is kept out of calibration, so the quality check measures text the quantizer never saw."""
    if len(texts) < 2:
        raise StropError(
            "--calibration: one text is too few to keep a held-out part for the quality check; "
            "give more texts or a separate --eval file"
        )
    held = set(range(0, len(texts), 10)) if len(texts) >= 10 else {len(texts) - 1}
    return [t for i, t in enumerate(texts) if i not in held], [texts[i] for i in sorted(held)]
