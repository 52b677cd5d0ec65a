"""Score (prompt, response) pairs with a reward model trained by `rl: reward`: what the `reward_model`
reward and `strop reward-score` use.

A reward model folder is an ordinary strop output (a PEFT adapter or a full HF model, plus
strop_config.yml) with `reward_head.safetensors` beside it (models/heads.py). Responses are rendered with
the chat template exactly as in training, and scored at the last token.
"""

from __future__ import annotations

from pathlib import Path

import torch

from strop.data.preference import collate_sequences, encode_prompt, encode_reply
from strop.models.chat_template import ensure_chat_template
from strop.models.heads import load_reward_head, sequence_rewards
from strop.models.loading import load_tokenizer
from strop.models.saved import load_saved, saved_config
from strop.runtime.devices import default_device


class RewardScorer:
    """A loaded reward model: `score(prompts, responses)` → one float per pair."""

    def __init__(self, model_dir: str | Path, device: torch.device | None = None):
        folder = Path(model_dir)
        self.device = device or default_device()
        self.head = load_reward_head(folder, self.device)
        saved = saved_config(folder)
        model, tokenizer_source = load_saved(folder)
        self.model = model.to(self.device).eval()
        self.tokenizer = load_tokenizer(tokenizer_source)
        ensure_chat_template(self.tokenizer, saved.get("chat_template"))
        self.max_length = int(saved.get("sequence_len") or 2048)

    def _ids(self, prompt, response: str) -> tuple[list[int], int]:
        text, prompt_ids = encode_prompt(self.tokenizer, prompt)
        reply = encode_reply(self.tokenizer, prompt, text, response)
        ids = prompt_ids + reply
        return ids[-self.max_length :], len(prompt_ids)

    @torch.no_grad()
    def score(self, prompts: list, responses: list[str], batch_size: int = 8) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(prompts), batch_size):
            seqs = [
                self._ids(p, r)
                for p, r in zip(prompts[start : start + batch_size], responses[start : start + batch_size])
            ]
            batch = {k: v.to(self.device) for k, v in collate_sequences(seqs, self.tokenizer.pad_token_id).items()}
            scores += sequence_rewards(self.model, self.head, batch).float().cpu().tolist()
        return scores
