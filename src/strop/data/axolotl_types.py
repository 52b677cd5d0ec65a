"""Axolotl's dataset types, read as strop's own row formats.

An Axolotl dataset entry names a type and, for the chat types, where each field sits in the row
(`field_messages`, `message_property_mappings`, `roles`, `field_chosen`, ...). When the config is read
each Axolotl type becomes the strop type its rows turn into (`chat_template` → chat, `chat_template.default`
→ dpo, `llama3.ultra` under rl: kto → kto, ...), keeping the Axolotl name in `axolotl_type`; while the
data is read, `dataset_rows` rewrites every row into that strop shape. So the converters, tokenization
and label masks are strop's, and an Axolotl config trains on exactly what a strop config would.

User-defined transforms (`type: module.function`, GRPO's prompt transforms) follow Axolotl's calling
convention: `function(cfg, *args, **kwargs)` returns `(transform_fn, dataset_kwargs)` and
`transform_fn(row, tokenizer=None)` returns the new fields of the row. The module is imported from the
config's folder first, else from the Python path: like a reward function, it is code the config's author
wrote and strop runs it with your rights. Only use configs whose folder you trust.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from strop.errors import StropError
from strop.run_types import RunConfig

#: Axolotl type → strop type, by objective family ("sft", "pair", "kto", "rl"); "*" is any objective.
AXOLOTL_TYPES: dict[str, dict[str, str]] = {
    "chat_template": {"*": "chat"},
    "chat_template.default": {"*": "dpo", "kto": "dpo"},
    "chat_template.argilla": {"*": "dpo"},
    "chat_template.argilla_chat": {"*": "dpo"},
    "bradley_terry.chat_template": {"*": "dpo"},
    "chatml": {"*": "chat"},
    "llama3.ultra": {"*": "chatml.ultra", "kto": "kto"},
    "chatml.ultra": {"*": "chatml.ultra", "kto": "kto"},
    "llama3.intel": {"*": "chatml.intel"},
    "llama3.argilla": {"*": "chatml.argilla"},
    "llama3.prompt_pairs": {"*": "dpo"},
    "chatml.prompt_pairs": {"*": "dpo"},
    "input_output": {"*": "input_output"},
    # alpaca rows in Axolotl's prompt styles: strop formats alpaca through the chat template
    # (`chat_template: phi_3` / `chatml` renders what the style wrote by hand)
    "alpaca:chat": {"*": "alpaca"},
    "alpaca:chatml": {"*": "alpaca"},
    "alpaca:phi": {"*": "alpaca"},
}
_DEFAULT_ROLES = {
    "user": ["user", "human"],
    "assistant": ["assistant", "gpt", "model"],
    "system": ["system"],
    "tool": ["tool"],
}


class AxolotlDatasetKeys(BaseModel):
    """Axolotl's per-dataset keys (flat in each `datasets:` entry)."""

    axolotl_type: str | None = Field(
        None, description="The Axolotl type this entry was given (set when the config is read)."
    )
    field_messages: str | None = Field(
        None, description="Row field holding the conversation (chat_template; default messages)."
    )
    message_property_mappings: dict[str, str] | None = Field(
        None, description="Message keys: {role: from, content: value}."
    )
    message_field_role: str | None = Field(None, description="Legacy form of message_property_mappings.role.")
    message_field_content: str | None = Field(None, description="Legacy form of message_property_mappings.content.")
    roles: dict[str, list[str]] | None = Field(None, description="strop role → the names the data uses for it.")
    roles_to_train: list[str] | None = Field(None, description="Roles whose turns are trained (strop: assistant).")
    train_on_eos: str | None = Field(None, description="Which end-of-turn tokens are trained (strop: turn).")
    drop_system_message: bool | None = Field(
        None, description="Drop the data's system turns (chat_template types); a template's default stays."
    )
    field_chosen: str | None = Field(None, description="Row field of the chosen reply (DPO chat_template types).")
    field_rejected: str | None = Field(None, description="Row field of the rejected reply (DPO chat_template types).")
    field_prompt: str | None = Field(None, description="Row field of the prompt.")
    field_system: str | None = Field(None, description="Row field of the system prompt.")
    field: str | None = Field(None, description="Row field holding the text (completion).")
    ds_type: str | None = Field(
        None, description="File format hint (json, parquet, csv): strop reads it from the suffix."
    )
    data_files: str | list[str] | None = Field(None, description="Hub dataset files: strop reads local files (path).")


def _family(rl: str | None, reward_model: bool) -> str:
    if rl == "kto":
        return "kto"
    return rl or ("reward" if reward_model else "sft")


def translate_datasets(raw: dict[str, Any], source: str, known: set[str]) -> None:
    """Rewrite each Axolotl dataset type of `raw` into the strop type its rows become (in place)."""
    family = _family(raw.get("rl"), bool(raw.get("reward_model")))
    for index, spec in enumerate(raw.get("datasets") or []):
        if not isinstance(spec, dict) or "type" not in spec:
            continue
        kind = spec["type"]
        if isinstance(kind, dict):
            raise StropError(
                f"{source}: datasets[{index}].type: a type given as a mapping (Axolotl's user-defined "
                "prompt format) is not supported; use chat_template with field mappings"
            )
        if kind == "completion" and spec.get("field"):
            spec["axolotl_type"], spec["type"] = kind, "text"
        elif kind in AXOLOTL_TYPES:
            spec["axolotl_type"] = kind
            spec["type"] = AXOLOTL_TYPES[kind].get(family, AXOLOTL_TYPES[kind]["*"])
        elif kind not in known and "." in kind and family in ("grpo", "dapo", "dr_grpo", "ppo"):
            spec["axolotl_type"], spec["type"] = kind, "prompt"
        _check_training_roles(spec, source, index)


def _check_training_roles(spec: dict[str, Any], source: str, index: int) -> None:
    """strop trains the assistant's turns with their end of turn: say so when a config asks otherwise."""
    roles = spec.get("roles_to_train")
    if roles is not None and {_canonical_role(r, spec.get("roles")) for r in roles} != {"assistant"}:
        raise StropError(
            f"{source}: datasets[{index}].roles_to_train: {roles} is not supported: strop trains the "
            "assistant turns (or every token with train_on_inputs: true)"
        )
    eos = spec.get("train_on_eos")
    if eos not in (None, "turn", "all"):
        raise StropError(
            f"{source}: datasets[{index}].train_on_eos: {eos!r} is not supported: strop trains the end "
            "of every trained turn ('turn')"
        )


def _canonical_role(name: str, roles: dict[str, list[str]] | None) -> str:
    for table in (roles or {}, _DEFAULT_ROLES):
        for role, names in table.items():
            if name == role or name in names:
                return role
    return name


def _messages(items: Any, spec, where: str, field: str) -> list[dict[str, str]]:
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise StropError(f"{where}: field '{field}' must be a list of messages, got {type(items).__name__}")
    mapping = spec.message_property_mappings or {}
    role_key = mapping.get("role") or spec.message_field_role or "role"
    content_key = mapping.get("content") or spec.message_field_content or "content"
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or role_key not in item or content_key not in item:
            raise StropError(
                f"{where}: {field}[{i}] must be an object with '{role_key}' and '{content_key}' "
                "(set message_property_mappings for other names)"
            )
        out.append({"role": _canonical_role(item[role_key], spec.roles), "content": item[content_key]})
    return out


def _reply(value: Any, spec, where: str, field: str) -> str:
    if isinstance(value, dict):
        return _messages([value], spec, where, field)[0]["content"]
    return value


def remap_row(spec, row: dict[str, Any], where: str, transform=None) -> dict[str, Any]:
    """One row of an Axolotl type in the shape of the strop type it was given."""
    kind = spec.axolotl_type
    if kind in ("chat_template", "chatml"):
        field = spec.field_messages or ("messages" if "messages" in row else "conversations")
        messages = _messages(row.get(field), spec, where, field)
        if spec.drop_system_message:
            messages = [m for m in messages if m["role"] != "system"]
        return {"messages": messages}
    if kind == "chat_template.default":
        field = spec.field_messages or "messages"
        return {
            "prompt": _messages(row.get(field), spec, where, field),
            "chosen": _reply(row.get(spec.field_chosen or "chosen"), spec, where, spec.field_chosen or "chosen"),
            "rejected": _reply(
                row.get(spec.field_rejected or "rejected"), spec, where, spec.field_rejected or "rejected"
            ),
        }
    if kind in ("chat_template.argilla", "chat_template.argilla_chat"):
        chosen, rejected = spec.field_chosen or "chosen", spec.field_rejected or "rejected"
        return {
            "chosen": _messages(row.get(chosen), spec, where, chosen),
            "rejected": _messages(row.get(rejected), spec, where, rejected),
        }
    if kind == "bradley_terry.chat_template":
        prompt = [{"role": "user", "content": row.get("input")}]
        if row.get("system"):
            prompt.insert(0, {"role": "system", "content": row["system"]})
        return {"prompt": prompt, "chosen": row.get("chosen"), "rejected": row.get("rejected")}
    if kind == "completion":
        return {"text": row.get(spec.field)}
    if transform is not None:
        return transform(dict(row))
    return row


def _import_function(name: str, base_dir: Path | None):
    """`module.function`: module.py in the config's folder first, else an importable module."""
    module_name, _, function = name.rpartition(".")
    local = Path(base_dir or ".") / f"{module_name.replace('.', '/')}.py"
    try:
        if local.is_file():
            spec = importlib.util.spec_from_file_location(f"strop_transform_{local.stem}", local)
            if spec is None or spec.loader is None:
                raise ImportError("no module spec for this file")  # reported below, naming the file
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - the user's module failed to import: say which and why
        where = local if local.is_file() else module_name
        raise StropError(f"datasets type '{name}': importing {where} raised {type(err).__name__}: {err}") from err
    fn = getattr(module, function, None)
    if not callable(fn):
        raise StropError(f"datasets type '{name}': {module_name} has no function '{function}'")
    return fn


def load_transform(name: str, cfg: RunConfig, base_dir: Path | None):
    """`module.function` from the config's folder (else the Python path), called as Axolotl calls it:
    function(cfg) → (transform_fn, dataset_kwargs); returns transform_fn(row) -> new fields."""
    fn = _import_function(name, base_dir)
    made = fn(cfg)
    transform, options = made if isinstance(made, tuple) else (made, {})
    drop = set((options or {}).get("remove_columns") or [])

    def apply(row: dict[str, Any]) -> dict[str, Any]:
        try:
            result = transform(row, tokenizer=None)
        except TypeError:
            result = transform(row)
        return {k: v for k, v in {**row, **result}.items() if k not in drop}

    return apply


def dataset_rows(cfg: RunConfig, spec, base_dir: Path | None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, row) of one `datasets:` entry, in the shape of its strop type; with
    dataset_exact_deduplication, rows equal to an earlier row of any dataset are skipped."""
    from strop.data.readers import read_rows

    kind, transform = getattr(spec, "axolotl_type", None), None
    if kind and spec.type == "prompt" and kind not in AXOLOTL_TYPES:
        transform = load_transform(kind, cfg, base_dir)
    seen: set[str] | None = None
    if getattr(cfg, "dataset_exact_deduplication", False):
        seen = set()
        for earlier in cfg.datasets[: next(i for i, s in enumerate(cfg.datasets) if s is spec)]:
            seen.update(
                json.dumps(r, sort_keys=True) for _, r in read_rows(earlier.path, base_dir, earlier.split, earlier.name)
            )
    for where, row in read_rows(spec.path, base_dir, spec.split, spec.name):
        if seen is not None:
            key = json.dumps(row, sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
        yield where, remap_row(spec, row, where, transform) if kind else row


__all__ = ["AXOLOTL_TYPES", "AxolotlDatasetKeys", "dataset_rows", "remap_row", "translate_datasets"]
