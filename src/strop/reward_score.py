"""Score (prompt, response) pairs with a reward model trained by `rl: reward`: the library entry point
the RL objectives use (`RewardScorer`) and `strop reward-score MODEL_DIR FILE.jsonl`.

A reward model folder is an ordinary strop output (a PEFT adapter or a full HF model, plus
strop_config.yml) with `reward_head.safetensors` beside it; see objectives/reward.py. Responses are
rendered with the chat template exactly as in training, and scored at the last token.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from strop.data.preference import collate_sequences, encode_prompt, encode_reply
from strop.data.readers import read_rows
from strop.data.tokenize import ensure_chat_template
from strop.errors import StropError
from strop.objectives.reward import HEAD_FILE, RewardHead, sequence_rewards


class RewardScorer:
    """A loaded reward model: `score(prompts, responses)` → one float per pair."""

    def __init__(self, model_dir: str | Path, device: torch.device | None = None):
        from strop.models import load_adapter, load_model, load_tokenizer, resolve_model_path

        folder = Path(model_dir)
        if not (folder / HEAD_FILE).is_file():
            raise StropError(f"{folder}: no {HEAD_FILE}: not a reward model trained with rl: reward")
        config_path = folder / "strop_config.yml"
        saved = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if (folder / "adapter_config.json").is_file():
            base_name = saved.get("base_model") or json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
            model = load_adapter(load_model(resolve_model_path(base_name)), folder)
        else:
            model = load_model(str(folder))
        self.model = model.to(self.device).eval()
        self.tokenizer = load_tokenizer(str(folder))
        ensure_chat_template(self.tokenizer, saved.get("chat_template"))
        weight = load_file(str(folder / HEAD_FILE))["weight"]
        self.head = RewardHead(weight.shape[1]).to(self.device)
        self.head.weight.data.copy_(weight)
        self.max_length = int(saved.get("sequence_len") or 2048)

    def _ids(self, prompt, response: str) -> tuple[list[int], int]:
        text, prompt_ids = encode_prompt(self.tokenizer, prompt)
        reply = encode_reply(self.tokenizer, prompt, text, response)
        ids = prompt_ids + reply
        return ids[-self.max_length:], len(prompt_ids)

    @torch.no_grad()
    def score(self, prompts: list, responses: list[str], batch_size: int = 8) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(prompts), batch_size):
            seqs = [self._ids(p, r) for p, r in zip(prompts[start:start + batch_size], responses[start:start + batch_size])]
            batch = {k: v.to(self.device) for k, v in collate_sequences(seqs, self.tokenizer.pad_token_id).items()}
            scores += sequence_rewards(self.model, self.head, batch).float().cpu().tolist()
        return scores


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
    out = open(args.output, "w") if args.output else sys.stdout
    try:
        for row, value in zip(rows, scores):
            out.write(json.dumps({**row, "score": value}) + "\n")
    finally:
        if args.output:
            out.close()
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("reward-score", help="score prompt/response pairs with a trained reward model")
    parser.add_argument("model_dir", help="output folder of an rl: reward run (adapter or model + reward_head.safetensors)")
    parser.add_argument("file", help="JSONL (or JSON/CSV/Parquet) rows {prompt, response}")
    parser.add_argument("--output", "-o", help="write JSONL rows with a 'score' field here (default: stdout)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per forward pass")
    parser.set_defaults(func=_run)
