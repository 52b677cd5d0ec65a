"""`strop eval`: held-out exact match of a model's greedy answers against a dataset's references.

Exact match is the plainest learning metric for instruction tuning: the reply, stripped of surrounding
whitespace, must equal the reference reply. Works on alpaca and chat rows (the last assistant message is
the reference; everything before it is the prompt).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from strop.data.formats import FORMATS
from strop.data.readers import read_rows
from strop.errors import StropError


def load_references(path: str, kind: str) -> list[tuple[list[dict[str, str]], str]]:
    """(conversation prefix, reference reply) pairs from an alpaca or chat file."""
    if kind not in ("alpaca", "chat", "sharegpt"):
        raise StropError(f"eval: dataset type '{kind}' has no reference replies (use alpaca or chat)")
    pairs = []
    for where, row in read_rows(path):
        messages = FORMATS[kind](row, where)["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        pairs.append((messages[:last], messages[last]["content"]))
    if not pairs:
        raise StropError(f"eval: {path} is empty")
    return pairs


def exact_match(model, tokenizer, pairs, max_new_tokens: int = 32, batch_size: int = 8) -> tuple[float, list[str]]:
    from strop.models.generate import answer

    replies = answer(model, tokenizer, [p for p, _ in pairs], max_new_tokens, batch_size=batch_size)
    hits = sum(reply.strip() == ref.strip() for reply, (_, ref) in zip(replies, pairs))
    return hits / len(pairs), replies


def _run(args: argparse.Namespace) -> int:
    from strop.models.saved import load_for_chat

    pairs = load_references(args.data, args.type)
    model, tokenizer = load_for_chat(args.model, args.trust_remote_code)
    score, replies = exact_match(model, tokenizer, pairs, args.max_new_tokens)
    print(f"exact match: {score:.3f} ({round(score * len(pairs))}/{len(pairs)}) on {args.data}")
    for (prompt, ref), reply in list(zip(pairs, replies))[: args.show]:
        print(json.dumps({"prompt": prompt[-1]["content"], "reference": ref, "reply": reply}, ensure_ascii=False))
    if args.out:
        Path(args.out).write_text(json.dumps({"exact_match": score, "n": len(pairs), "replies": replies}, indent=1))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="held-out exact match of a model, adapter or merged model")
    parser.add_argument("model", help="alias, hub id, model folder or training output_dir")
    parser.add_argument("data", help="alpaca or chat file with reference replies")
    parser.add_argument("--type", default="alpaca", help="dataset type of DATA (alpaca or chat)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--show", type=int, default=3, help="print this many replies")
    parser.add_argument("--out", help="write the score and replies as JSON here")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.set_defaults(func=_run)
