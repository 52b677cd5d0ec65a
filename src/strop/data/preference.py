"""Preference data: pairs {prompt, chosen, rejected} and unpaired {prompt, completion, label}.

A prompt is a string (one user turn) or a list of chat messages (the conversation so far); a reply is a
string or a one-message assistant list (a list that starts with the prompt, as UltraFeedback writes it,
is accepted too). Everything is rendered with the tokenizer's chat template, so the model is aligned on
exactly what it sees at inference.

Token layout of a pair row, kept compact because the prompt is shared by both sides:

    input_ids = prompt ids + chosen ids + rejected ids      (prompt_len, chosen_len mark the splits)

The collate functions rebuild the two sequences `prompt+chosen` and `prompt+rejected` from it. The
prompt is tokenized once; each reply is the text the template adds after the generation prompt.

Unpaired (KTO) rows hold `prompt + completion`, the label, and a mismatched completion taken from
another row (`kl_ids`), fixed when the data is built so that its reference log-prob can be cached per
row like everything else (see objectives/kto.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from strop.data import DataReport, drop_excess, note_excess, split_validation
from strop.data.formats import _message
from strop.data.replay import sources
from strop.data.tokenize import IGNORE, _encode, _render
from strop.errors import StropError
from strop.models.chat_template import ensure_chat_template
from strop.run_types import RunConfig

Messages = list[dict[str, str]]


# ---------------------------------------------------------------- row formats -------------------------


def _prompt(value: Any, where: str, name: str, system: str | None = None) -> Messages:
    if isinstance(value, str):
        if not value.strip():
            raise StropError(f"{where}: field '{name}' is empty")
        messages = [{"role": "user", "content": value}]
    elif isinstance(value, list) and value:
        messages = [_message(item, where, i, sharegpt=False) for i, item in enumerate(value)]
    elif value is None:
        raise StropError(f"{where}: missing field '{name}'")
    else:
        raise StropError(
            f"{where}: field '{name}' must be a string or a non-empty list of messages, got {type(value).__name__}"
        )
    if system:
        messages.insert(0, {"role": "system", "content": system})
    return messages


def _reply(value: Any, where: str, name: str, prompt: Messages | None) -> tuple[str, Messages | None]:
    """The reply text, and the prompt a full-conversation reply carries (UltraFeedback style)."""
    if value is None:
        raise StropError(f"{where}: missing field '{name}'")
    carried = None
    if isinstance(value, list):
        if not value:
            raise StropError(f"{where}: field '{name}' is an empty list")
        messages = [_message(item, where, i, sharegpt=False) for i, item in enumerate(value)]
        if messages[-1]["role"] != "assistant":
            raise StropError(f"{where}: field '{name}' must end with an assistant message")
        if len(messages) > 1:
            carried = messages[:-1]
            if prompt is not None and carried != prompt:
                raise StropError(f"{where}: field '{name}' starts with a conversation that differs from 'prompt'")
        value = messages[-1]["content"]
    if not isinstance(value, str):
        raise StropError(
            f"{where}: field '{name}' must be a string or an assistant message list, got {type(value).__name__}"
        )
    if not value.strip():
        raise StropError(f"{where}: field '{name}' is empty")
    return value, carried


def _pair(prompt: Messages | None, chosen: Any, rejected: Any, where: str, names=("chosen", "rejected")) -> dict:
    chosen_text, carried_c = _reply(chosen, where, names[0], prompt)
    rejected_text, carried_r = _reply(rejected, where, names[1], prompt)
    prompt = prompt or carried_c or carried_r
    if prompt is None:
        raise StropError(f"{where}: missing field 'prompt'")
    if carried_c and carried_r and carried_c != carried_r:
        raise StropError(f"{where}: '{names[0]}' and '{names[1]}' continue different conversations")
    if chosen_text.strip() == rejected_text.strip():
        raise StropError(f"{where}: '{names[0]}' and '{names[1]}' are the same reply: nothing to prefer")
    return {"prompt": prompt, "chosen": chosen_text, "rejected": rejected_text}


def pair(row: dict[str, Any], where: str) -> dict:
    """`dpo` / `orpo`: {prompt, chosen, rejected, system?}."""
    prompt = _prompt(row["prompt"], where, "prompt", row.get("system")) if row.get("prompt") is not None else None
    return _pair(prompt, row.get("chosen"), row.get("rejected"), where)


def chatml_intel(row: dict[str, Any], where: str) -> dict:
    """`chatml.intel` (Intel/orca_dpo_pairs): {system?, question, chosen, rejected}."""
    return _pair(
        _prompt(row.get("question"), where, "question", row.get("system")),
        row.get("chosen"),
        row.get("rejected"),
        where,
    )


def chatml_argilla(row: dict[str, Any], where: str) -> dict:
    """`chatml.argilla`: {instruction, chosen_response, rejected_response}."""
    return _pair(
        _prompt(row.get("instruction"), where, "instruction"),
        row.get("chosen_response"),
        row.get("rejected_response"),
        where,
        ("chosen_response", "rejected_response"),
    )


def chatml_ultra(row: dict[str, Any], where: str) -> dict:
    """`chatml.ultra` (UltraFeedback binarized): prompt string, chosen/rejected full conversations."""
    return pair(row, where)


def unpaired(row: dict[str, Any], where: str) -> dict:
    """`kto`: {prompt, completion, label} with label true (desirable) or false (undesirable)."""
    label = row.get("label")
    if not isinstance(label, bool):
        raise StropError(f"{where}: field 'label' must be true or false, got {label!r}")
    prompt = _prompt(row.get("prompt"), where, "prompt", row.get("system"))
    completion, _ = _reply(row.get("completion"), where, "completion", prompt)
    return {"prompt": prompt, "completion": completion, "label": label}


PAIR_FORMATS: dict[str, Callable[[dict[str, Any], str], dict]] = {
    "dpo": pair,
    "orpo": pair,
    "chatml.intel": chatml_intel,
    "chatml.argilla": chatml_argilla,
    "chatml.ultra": chatml_ultra,
}
UNPAIRED_FORMATS: dict[str, Callable[[dict[str, Any], str], dict]] = {"kto": unpaired}


# ---------------------------------------------------------------- tokenization ------------------------


def encode_prompt(tokenizer, prompt: Messages | str) -> tuple[str, list[int]]:
    """Rendered prompt text (with the generation prompt) and its ids."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    text = _render(tokenizer, messages, add_generation_prompt=True)
    return text, _encode(tokenizer, text, add_special_tokens=False)[0]


def encode_reply(tokenizer, prompt: Messages | str, prompt_text: str, reply: str, where: str = "") -> list[int]:
    """Ids of what the chat template adds for `reply` after the generation prompt (end of turn included)."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    full = _render(tokenizer, messages + [{"role": "assistant", "content": reply}])
    if not full.startswith(prompt_text):
        raise StropError(
            f"{where}: the chat template does not render the prompt as a prefix of the "
            "conversation; set chat_template: chatml"
        )
    return _encode(tokenizer, full[len(prompt_text) :], add_special_tokens=False)[0]


def row_key(*parts: list[int]) -> str:
    """A stable key for a row's token content (the reference log-prob cache is keyed by it)."""
    digest = hashlib.sha1()
    for part in parts:
        digest.update(torch.tensor(part, dtype=torch.int64).numpy().tobytes() + b"|")
    return digest.hexdigest()[:20]


def _fit(
    prompt: list[int], replies: list[list[int]], limit: int, strategy: str, where: str, report: DataReport
) -> tuple[list[int], list[list[int]]] | None:
    """Apply sequence_len to prompt + the longest reply: drop, error, or truncate (prompt keeps its end)."""
    longest = len(prompt) + max(len(r) for r in replies)
    if longest <= limit:
        return prompt, replies
    if drop_excess(report, strategy, where, f"{longest} tokens (prompt + longest reply)", f"sequence_len={limit}"):
        return None
    if len(prompt) > limit // 2:
        prompt = prompt[-(limit // 2) :]
    return prompt, [r[: limit - len(prompt)] for r in replies]


def _examples(
    cfg: RunConfig, base_dir: Path | None, formats: dict[str, Callable], objective: str | None, report: DataReport
):
    for spec, rows in sources(cfg, base_dir, lambda: report.rows):
        if spec.type not in formats:
            raise StropError(
                f"datasets: type '{spec.type}' is not read by rl: {objective} (it reads: {', '.join(sorted(formats))})"
            )
        before = report.rows
        for where, row in rows:
            report.rows += 1
            yield where, spec.type, formats[spec.type](row, where)
        if report.rows == before and not getattr(cfg, "dataset_exact_deduplication", False):
            raise StropError(f"dataset {spec.path} is empty")


def _finish(rows: list[dict], cfg: RunConfig, report: DataReport) -> tuple[list[dict], list[dict]]:
    note_excess(report, cfg, "rows")
    if cfg.sample_packing:
        report.notes.append("sample_packing is ignored for preference objectives (pairs are not packed)")
    return split_validation(rows, cfg, report, "rows")


def pair_row(prompt_ids: list[int], chosen_ids: list[int], rejected_ids: list[int], where: str = "") -> dict:
    return {
        "input_ids": prompt_ids + chosen_ids + rejected_ids,
        "prompt_len": len(prompt_ids),
        "chosen_len": len(chosen_ids),
        "key": row_key(prompt_ids, chosen_ids, rejected_ids),
        "where": where,
    }


def build_pair_data(
    cfg: RunConfig, tokenizer, base_dir: Path | None, objective: str
) -> tuple[list[dict], list[dict], DataReport]:
    """Tokenized preference pairs split into train and validation rows."""
    ensure_chat_template(tokenizer, cfg.chat_template)
    report, rows = DataReport(), []
    for where, _, example in _examples(cfg, base_dir, PAIR_FORMATS, objective, report):
        prompt_text, prompt_ids = encode_prompt(tokenizer, example["prompt"])
        replies = [
            encode_reply(tokenizer, example["prompt"], prompt_text, example[side], where)
            for side in ("chosen", "rejected")
        ]
        fitted = _fit(prompt_ids, replies, cfg.sequence_len, cfg.excess_length_strategy, where, report)
        if fitted is not None:
            prompt_ids, (chosen_ids, rejected_ids) = fitted
            rows.append(pair_row(prompt_ids, chosen_ids, rejected_ids, where=where))
    train, val = _finish(rows, cfg, report)
    return train, val, report


def unpaired_row(prompt_ids: list[int], completion_ids: list[int], label: bool, where: str = "") -> dict:
    return {"input_ids": prompt_ids + completion_ids, "prompt_len": len(prompt_ids), "label": label, "where": where}


def _unpaired_examples(cfg: RunConfig, base_dir: Path | None, objective: str, report: DataReport):
    """`kto` rows as they are; pair rows split into a desirable and an undesirable example."""
    formats = {**UNPAIRED_FORMATS, **PAIR_FORMATS}
    for where, kind, example in _examples(cfg, base_dir, formats, objective, report):
        if kind in UNPAIRED_FORMATS:
            yield where, example
        else:
            yield where, {"prompt": example["prompt"], "completion": example["chosen"], "label": True}
            yield where, {"prompt": example["prompt"], "completion": example["rejected"], "label": False}


def _prompt_ids(row: dict) -> list[int]:
    return row["input_ids"][: row["prompt_len"]]


def assign_kl_partners(rows: list[dict], prompt_of: Callable[[dict], Any] = _prompt_ids) -> None:
    """Give each row the completion of the next row with a different prompt (cyclically): the mismatched
    pair whose policy/reference log-ratio estimates the KTO reference point. `prompt_of` says what makes
    two prompts the same (for image rows, their images too)."""
    n = len(rows)
    for i, row in enumerate(rows):
        prompt = prompt_of(row)
        partner = next((rows[(i + k) % n] for k in range(1, n) if prompt_of(rows[(i + k) % n]) != prompt), row)
        row["kl_ids"] = partner["input_ids"][partner["prompt_len"] :]
        row["key"] = row_key(
            row["input_ids"][: row["prompt_len"]],
            row["input_ids"][row["prompt_len"] :],
            row["kl_ids"],
            [int(row["label"])],
        )


def build_unpaired_data(
    cfg: RunConfig, tokenizer, base_dir: Path | None, objective: str
) -> tuple[list[dict], list[dict], DataReport]:
    """Tokenized {prompt, completion, label} rows with their mismatched KL completions."""
    ensure_chat_template(tokenizer, cfg.chat_template)
    report, rows = DataReport(), []
    for where, example in _unpaired_examples(cfg, base_dir, objective, report):
        prompt_text, prompt_ids = encode_prompt(tokenizer, example["prompt"])
        completion = encode_reply(tokenizer, example["prompt"], prompt_text, example["completion"], where)
        fitted = _fit(prompt_ids, [completion], cfg.sequence_len, cfg.excess_length_strategy, where, report)
        if fitted is not None:
            rows.append(unpaired_row(fitted[0], fitted[1][0], example["label"], where))
    train, val = _finish(rows, cfg, report)
    for split in (train, val):
        if split:
            assign_kl_partners(split)
    labels = [r["label"] for r in train]
    if all(labels) or not any(labels):
        report.notes.append("all training rows carry the same label: KTO learns best with both kinds")
    return train, val, report


# ---------------------------------------------------------------- collation ---------------------------


def _pad(rows: list[list[int]], value: int, length: int) -> torch.Tensor:
    return torch.tensor([row + [value] * (length - len(row)) for row in rows], dtype=torch.long)


def collate_sequences(sequences: list[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """(ids, prompt_len) pairs → right-padded input_ids, attention_mask and labels (reply tokens only)."""
    length = max(len(ids) for ids, _ in sequences)
    labels = [[IGNORE] * p + ids[p:] for ids, p in sequences]
    ids = [ids for ids, _ in sequences]
    return {
        "input_ids": _pad(ids, pad_id, length),
        "labels": _pad(labels, IGNORE, length),
        "attention_mask": _pad([[1] * len(i) for i in ids], 0, length),
    }


def pair_sequences(row: dict) -> tuple[list[int], list[int]]:
    """`prompt+chosen` and `prompt+rejected` of a pair row."""
    ids, p, c = row["input_ids"], row["prompt_len"], row["chosen_len"]
    return ids[: p + c], ids[:p] + ids[p + c :]


def collate_pairs(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """2B sequences, all chosen first then all rejected, for one concatenated forward pass; cached
    reference log-probs ride along as `ref_logps` (2B,) when every row has them."""
    sides = [pair_sequences(r) for r in rows]
    batch = collate_sequences(
        [(c, r["prompt_len"]) for (c, _), r in zip(sides, rows)]
        + [(j, r["prompt_len"]) for (_, j), r in zip(sides, rows)],
        pad_id,
    )
    if all("ref" in r for r in rows):
        batch["ref_logps"] = torch.tensor(
            [r["ref"][0] for r in rows] + [r["ref"][1] for r in rows], dtype=torch.float32
        )
    return batch


def collate_unpaired(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """B matched sequences then B mismatched (KL) ones, labels, and cached reference log-probs."""
    matched = [(r["input_ids"], r["prompt_len"]) for r in rows]
    mismatched = [(r["input_ids"][: r["prompt_len"]] + r["kl_ids"], r["prompt_len"]) for r in rows]
    batch = collate_sequences(matched + mismatched, pad_id)
    batch["desirable"] = torch.tensor([bool(r["label"]) for r in rows], dtype=torch.bool)
    if all("ref" in r for r in rows):
        batch["ref_logps"] = torch.tensor(
            [r["ref"][0] for r in rows] + [r["ref"][1] for r in rows], dtype=torch.float32
        )
    return batch
