"""`strop reward-score MODEL_DIR FILE.jsonl`: score prompt/response pairs with a reward model trained by
`rl: reward` (strop.rl.reward_scorer)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from strop.data.readers import read_rows
from strop.errors import StropError
from strop.rl.reward_scorer import RewardScorer


def _read(path: str) -> list[dict]:
    rows = []
    for where, row in read_rows(path):
        response = row.get("response", row.get("completion"))
        if row.get("prompt") is None or not isinstance(response, str):
            raise StropError(f"{where}: each row needs 'prompt' (string or messages) and 'response' (string)")
        rows.append(row | {"response": response})
    return rows


def _run(args: argparse.Namespace) -> int:
    rows = _read(args.file)
    scorer = RewardScorer(args.model_dir)
    scores = scorer.score([r["prompt"] for r in rows], [r["response"] for r in rows], args.batch_size)
    with open(args.output, "w") if args.output else contextlib.nullcontext(sys.stdout) as out:
        for row, value in zip(rows, scores):
            out.write(json.dumps({**row, "score": value}) + "\n")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("reward-score", help="score prompt/response pairs with a trained reward model")
    parser.add_argument(
        "model_dir", help="output folder of an rl: reward run (adapter or model + reward_head.safetensors)"
    )
    parser.add_argument("file", help="JSONL (or JSON/CSV/Parquet) rows {prompt, response}")
    parser.add_argument("--output", "-o", help="write JSONL rows with a 'score' field here (default: stdout)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per forward pass")
    parser.set_defaults(func=_run)
