"""The chat template a tokenizer renders conversations with: its own, or ChatML when asked or missing."""

from __future__ import annotations

from typing import Any

from strop.errors import StropError

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def ensure_chat_template(tokenizer: Any, choice: str | None = None) -> None:
    """Use the tokenizer's own template unless a named one is asked for (models/chat_templates.py) or it
    has none (then ChatML)."""
    from strop.models.chat_templates import NAMED_TEMPLATES

    if choice not in (None, "tokenizer_default", *NAMED_TEMPLATES):
        raise StropError(
            f"chat_template: unknown template '{choice}' (known: tokenizer_default, "
            f"{', '.join(NAMED_TEMPLATES)}; or leave it unset)"
        )
    if choice in NAMED_TEMPLATES:
        tokenizer.chat_template = NAMED_TEMPLATES[choice]
    elif not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
