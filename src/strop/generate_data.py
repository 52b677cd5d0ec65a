"""`strop generate`: a teacher writes replies to a prompt set, giving an SFT dataset (sequence-level distillation).

Sequence-level distillation (Kim & Rush 2016) trains the student on the teacher's own outputs instead of
its logits, which works across tokenizers and is how reasoning traces are distilled: ask the teacher for
its reasoning with `--system`, and the student learns to produce it. The output is a `chat` JSONL file
that `strop train` reads directly; it is written to a temporary file and renamed when complete.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.progress import Progress

from strop.data.readers import read_rows
from strop.errors import StropError
from strop.safe_io import disk_errors, staged_file


def read_prompts(path: str) -> list[str]:
    """Prompts from rows with `prompt`, alpaca `instruction`(+`input`), or chat `messages` (last user turn)."""
    prompts = []
    for where, row in read_rows(path):
        if isinstance(row.get("prompt"), str):
            prompts.append(row["prompt"])
        elif isinstance(row.get("instruction"), str):
            extra = row.get("input") or ""
            prompts.append(f"{row['instruction']}\n\n{extra}" if extra.strip() else row["instruction"])
        elif isinstance(row.get("messages"), list):
            users = [m.get("content") for m in row["messages"] if isinstance(m, dict) and m.get("role") == "user"]
            if not users:
                raise StropError(f"{where}: no user message to answer")
            prompts.append(users[-1])
        else:
            raise StropError(f"{where}: expected a field 'prompt', 'instruction' or 'messages'")
    if not prompts:
        raise StropError(f"{path}: no prompts")
    return prompts


def generate_dataset(teacher: str, prompts_path: str, out: str, max_new_tokens: int = 256,
                     temperature: float = 0.0, system: str | None = None, batch_size: int = 8) -> Path:
    from strop.models.saved import load_for_chat
    from strop.models.generate import answer

    prompts = read_prompts(prompts_path)
    model, tokenizer = load_for_chat(teacher)
    prefix = [{"role": "system", "content": system}] if system else []
    out_path = Path(out)
    with disk_errors(out_path), staged_file(out_path) as tmp, tmp.open("w") as handle, Progress() as progress:
        task = progress.add_task("teacher writing", total=len(prompts))
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            conversations = [prefix + [{"role": "user", "content": p}] for p in chunk]
            for prompt, reply in zip(chunk, answer(model, tokenizer, conversations, max_new_tokens, temperature)):
                messages = prefix + [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]
                handle.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
            progress.update(task, advance=len(chunk))
    return out_path


def _run(args: argparse.Namespace) -> int:
    path = generate_dataset(args.teacher, args.prompts, args.out, args.max_new_tokens, args.temperature, args.system)
    print(f"wrote {path} (dataset type: chat)")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("generate", help="have a teacher model answer prompts, writing a chat dataset")
    parser.add_argument("teacher", help="alias, hub id, model folder or adapter folder")
    parser.add_argument("prompts", help="JSONL/JSON/CSV/Parquet with prompt, instruction or messages fields")
    parser.add_argument("--out", required=True, help="output JSONL (chat format)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--system", help="system message, e.g. asking for step-by-step reasoning")
    parser.set_defaults(func=_run)
