"""Ollama Modelfile for an exported GGUF.

Ollama does not run the model's Jinja chat template: it needs the same prompt format spelled in Go
template syntax. Translating arbitrary Jinja is not possible, so the common template families are
recognised by their marker tokens and replaced with a hand-written equivalent (the same shape as the
templates in Ollama's own library). A template that is not recognised gets a plain pass-through
template and a warning, rather than a silently wrong chat format.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from strop import manifest
from strop.errors import StropError
from strop.safe_io import write_text

CHATML = """\
{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ .Content }}{{ if not $last }}<|im_end|>
{{ end }}
{{- end }}
{{- if and $last (ne .Role "assistant") }}<|im_start|>assistant
{{ end }}
{{- end }}"""

LLAMA3 = """\
{{- if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>
{{- end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if ne .Role "system" }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}{{ if or (ne .Role "assistant") (not $last) }}<|eot_id|>{{ end }}
{{- end }}
{{- if and $last (ne .Role "assistant") }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end }}"""

MISTRAL = """\
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}[INST] {{ if and $.System $last }}{{ $.System }}

{{ end }}{{ .Content }}[/INST]
{{- else if eq .Role "assistant" }} {{ .Content }}{{ if not $last }}</s>{{ end }}
{{- end }}
{{- end }}"""

FALLBACK = "{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}"


@dataclass(frozen=True)
class TemplateFamily:
    """A recognised chat-template family: its Go template, its end-of-turn stops, and how to find
    the system prompt the Jinja template injects when the conversation has none."""

    name: str
    marker: str
    template: str
    stops: tuple[str, ...]
    system_pattern: str | None


FAMILIES = (
    TemplateFamily(
        "chatml", "<|im_start|>", CHATML, ("<|im_start|>", "<|im_end|>"), r"<\|im_start\|>system\n(.*?)<\|im_end\|>"
    ),
    TemplateFamily(
        "llama3",
        "<|start_header_id|>",
        LLAMA3,
        ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        r"<\|start_header_id\|>system<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>",
    ),
    TemplateFamily("mistral", "[INST]", MISTRAL, ("[INST]", "[/INST]"), None),
)

_PROBE = "\u2063probe\u2063"  # an unlikely string, to find where the user's text lands in a render


def detect_family(chat_template: str | None) -> TemplateFamily | None:
    """The family a Jinja chat template belongs to, by its marker tokens; None if unknown."""
    if not chat_template:
        return None
    for family in FAMILIES:
        if family.marker in chat_template:
            return family
    return None


def render_jinja(chat_template: str, messages: list[dict[str, str]], **extra: Any) -> str:
    """Render a HF chat template the way transformers does (sandboxed Jinja, trimmed blocks)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise StropError(f"chat template raised: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    context = {"bos_token": "", "eos_token": "", "add_generation_prompt": True, **extra}
    return env.from_string(chat_template).render(messages=messages, **context)


def default_system(chat_template: str, family: TemplateFamily | None) -> str | None:
    """The system prompt the template injects when the conversation has none (e.g. SmolLM2's
    "You are a helpful AI assistant named SmolLM..."), found by rendering a user-only conversation.
    Ollama only sends a system turn when asked, so it must become the Modelfile's SYSTEM."""
    if family is None or family.system_pattern is None:
        return None
    try:
        rendered = render_jinja(chat_template, [{"role": "user", "content": _PROBE}])
    except Exception:  # noqa: BLE001 - a template we cannot render has no default we can read
        return None
    match = re.search(family.system_pattern, rendered.split(_PROBE)[0], re.DOTALL)
    return match.group(1) if match else None


def _quote(text: str) -> str:
    if '"""' in text:
        raise StropError('cannot write a Modelfile value containing """')
    return f'"""{text}"""'


def _param_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"' if any(c.isspace() for c in value) else value
    return str(value)


def modelfile_text(
    gguf_ref: str,
    chat_template: str | None,
    stop_tokens: list[str] | None = None,
    params: dict[str, Any] | None = None,
    system: str | None = None,
) -> str:
    """The Modelfile content (see write_modelfile)."""
    family = detect_family(chat_template)
    lines = [f"# Generated by strop from {Path(gguf_ref).name}", f"FROM {gguf_ref}", ""]
    if family is None:
        print(
            "strop: warning: the chat template is not one strop can translate for Ollama "
            "(ChatML, Llama-3, Mistral [INST]); the Modelfile uses a plain pass-through TEMPLATE. "
            "Edit its TEMPLATE to match your model's prompt format.",
            file=sys.stderr,
        )
        lines.append("# WARNING: unrecognised chat template; this TEMPLATE passes the prompt through unformatted.")
        template = FALLBACK
    else:
        lines.append(f"# Chat format: {family.name} (translated from the model's Jinja chat template)")
        template = family.template
    lines.append(f"TEMPLATE {_quote(template)}")
    system = system if system is not None else (default_system(chat_template, family) if chat_template else None)
    if system:
        lines.append(f"SYSTEM {_quote(system)}")
    stops = list(dict.fromkeys([*(family.stops if family else ()), *(stop_tokens or [])]))
    for stop in stops:
        lines.append(f'PARAMETER stop "{stop}"')
    for key, value in (params or {}).items():
        lines.append(f"PARAMETER {key} {_param_value(value)}")
    return "\n".join(lines) + "\n"


def write_modelfile(
    gguf_path: str | Path,
    chat_template: str | None,
    out_path: str | Path,
    stop_tokens: list[str] | None = None,
    params: dict[str, Any] | None = None,
    system: str | None = None,
) -> Path:
    """Write an Ollama Modelfile for `gguf_path` to `out_path` and return its path.

    FROM is relative to the Modelfile's folder (./model.gguf when side by side), so the pair can be
    moved together. `stop_tokens` are added to the family's end-of-turn stops; `params` become
    PARAMETER lines (temperature, top_p, num_ctx, ...); `system` overrides the template's default.
    """
    out = Path(out_path)
    rel = os.path.relpath(Path(gguf_path).resolve(), out.parent.resolve())  # out itself may be a link, replaced
    ref = rel if rel.startswith("..") or os.path.isabs(rel) else f"./{rel}"
    manifest.claim(out)
    return write_text(out, modelfile_text(ref, chat_template, stop_tokens, params, system))
