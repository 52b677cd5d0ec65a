"""Prompt-only data for reinforcement learning: the policy writes the completions, rewards score them.

A row is a prompt plus whatever fields its rewards read (`answer`, `tests`, `schema`, ...):

    {"prompt": "What is 17 + 25?", "answer": "42"}                         type: prompt
    {"messages": [{"role": "system", ...}, {"role": "user", ...}], ...}    type: prompt
    {"instruction": "...", "input": "...", "output": "..."}                type: alpaca (output stays a field)

The prompt is rendered with the chat template and the generation prompt, exactly as at inference. The
whole row travels with the tokenized prompt, so a reward sees every field of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from strop.data import DataReport, drop_excess, note_excess, split_validation
from strop.data.formats import alpaca
from strop.data.preference import _examples, _prompt, encode_prompt
from strop.errors import StropError
from strop.models.chat_template import ensure_chat_template
from strop.run_types import RunConfig


def prompt_example(row: dict[str, Any], where: str) -> dict[str, Any]:
    """A `prompt` row: `prompt` (a string or messages) or `messages`, which must not end with a reply."""
    if "prompt" in row:
        messages = _prompt(row["prompt"], where, "prompt")
    elif "messages" in row:
        messages = _prompt(row["messages"], where, "messages")
        if messages[-1]["role"] == "assistant":
            raise StropError(
                f"{where}: field 'messages' ends with an assistant turn: an RL prompt ends where "
                "the model's reply begins"
            )
    else:
        raise StropError(f"{where}: missing field 'prompt' (a string or a list of messages) or 'messages'")
    return {"prompt": messages, "row": row}


def alpaca_example(row: dict[str, Any], where: str) -> dict[str, Any]:
    """An `alpaca` row: instruction (+ input) is the prompt; `output` stays in the row for the rewards."""
    return {"prompt": alpaca(row, where)["messages"][:-1], "row": row}


PROMPT_FORMATS = {"prompt": prompt_example, "alpaca": alpaca_example}


def build_prompt_data(
    cfg: RunConfig, tokenizer, base_dir: Path | None, completion_budget: int
) -> tuple[list[dict], list[dict], DataReport]:
    """Tokenized prompts with their rows; a prompt must leave `completion_budget` tokens of sequence_len."""
    ensure_chat_template(tokenizer, cfg.chat_template)
    limit = cfg.sequence_len - completion_budget
    if limit <= 0:
        raise StropError(
            f"sequence_len={cfg.sequence_len} leaves no room for prompts after "
            f"max_completion_length={completion_budget}"
        )
    report, rows = DataReport(), []
    for where, _, example in _examples(cfg, base_dir, PROMPT_FORMATS, cfg.rl, report):
        ids = encode_prompt(tokenizer, example["prompt"])[1]
        if len(ids) > limit:
            if drop_excess(
                report,
                cfg.excess_length_strategy,
                where,
                f"prompt of {len(ids)} tokens",
                f"sequence_len - max_completion_length = {limit}",
            ):
                continue
            ids = ids[-limit:]
        rows.append({"input_ids": ids, **example, "where": where})
    note_excess(report, cfg, "prompts")
    train, val = split_validation(rows, cfg, report, "prompts")
    return train, val, report
