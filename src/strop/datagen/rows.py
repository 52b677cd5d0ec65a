"""The text inside a dataset row of any format strop trains on, for filters and generators to look at.

Filters see a row as (prompt, response): the user side and the model side, whatever the format
(alpaca, chat/ShareGPT, preference pairs, KTO rows, completion, text). Generators need just the
prompt, which `read_prompts` takes from `prompt`, alpaca `instruction`(+`input`) or the last user turn.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from strop.data.readers import read_rows
from strop.errors import StropError


def _content(value: Any, roles: set[str] | None = None) -> str:
    """A string as is; a message list's contents (of `roles` only, when given), one per line."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for message in value:
            if isinstance(message, dict):
                role = message.get("role", message.get("from"))
                if roles is None or role in roles:
                    parts.append(str(message.get("content", message.get("value", ""))))
        return "\n".join(parts)
    return ""


def row_texts(row: dict[str, Any]) -> tuple[str, str]:
    """(prompt, response) text of a row; a preference pair's response is its chosen reply."""
    conversation = row.get("messages", row.get("conversations"))
    if isinstance(conversation, list):
        return (
            _content(conversation, {"user", "human", "system"}),
            _content(conversation, {"assistant", "gpt", "model"}),
        )
    if "instruction" in row:
        extra = _content(row.get("input"))
        prompt = _content(row["instruction"]) + (f"\n\n{extra}" if extra.strip() else "")
        return prompt, _content(row.get("output"))
    prompt = _content(row.get("prompt", row.get("question", "")), {"user", "system"})
    for key in ("chosen", "completion", "response", "output", "answer"):
        if key in row:
            return prompt, _content(row[key], {"assistant"})
    return prompt, _content(row.get("text", ""))


def row_text(row: dict[str, Any]) -> str:
    prompt, response = row_texts(row)
    return f"{prompt}\n{response}".strip()


def prompt_of(row: dict[str, Any], where: str) -> str:
    """The prompt a generator answers: `prompt`, alpaca `instruction`(+`input`), or the last user turn."""
    if isinstance(row.get("prompt"), str):
        return row["prompt"]
    if isinstance(row.get("instruction"), str):
        extra = row.get("input") or ""
        return f"{row['instruction']}\n\n{extra}" if extra.strip() else row["instruction"]
    if isinstance(row.get("messages"), list):
        users = [m.get("content") for m in row["messages"] if isinstance(m, dict) and m.get("role") == "user"]
        if not users:
            raise StropError(f"{where}: no user message to answer")
        if not isinstance(users[-1], str):
            raise StropError(f"{where}: the last user message has no text content")
        return users[-1]
    raise StropError(f"{where}: expected a field 'prompt', 'instruction' or 'messages'")


def read_prompt_rows(path: str) -> Iterator[tuple[str, dict[str, Any], str]]:
    """(where, row, prompt) for each row of a prompt file."""
    for where, row in read_rows(path):
        yield where, row, prompt_of(row, where)


def read_prompts(path: str) -> list[str]:
    prompts = [prompt for _, _, prompt in read_prompt_rows(path)]
    if not prompts:
        raise StropError(f"{path}: no prompts")
    return prompts
