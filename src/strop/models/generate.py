"""Answer chat prompts with a model: sample answers around training, `strop chat`, evaluation and data generation."""

from __future__ import annotations

import torch
from torch import nn

from strop.models.loading import eval_mode


def chat_inputs(
    tokenizer, conversations: list[list[dict[str, str]]], device: torch.device, suffix: str = ""
) -> dict[str, torch.Tensor]:
    """Left-padded token ids of each conversation rendered with the generation prompt (then `suffix`,
    the start of the reply, when given)."""
    texts = [
        tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) + suffix for c in conversations
    ]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    return {k: v.to(device) for k, v in encoded.items()}


@torch.no_grad()
def answer(
    model: nn.Module,
    tokenizer,
    conversations: list[list[dict[str, str]]],
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    batch_size: int = 8,
    streamer=None,
) -> list[str]:
    """Greedy (temperature 0) or sampled replies, batched; dropout is off while generating."""
    device = next(model.parameters()).device
    replies = []
    with eval_mode(model):
        for start in range(0, len(conversations), batch_size):
            inputs = chat_inputs(tokenizer, conversations[start : start + batch_size], device)
            sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
            out = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                streamer=streamer,
                **sampling,
            )
            new = out[:, inputs["input_ids"].shape[1] :]
            replies += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return replies


def answer_prompts(model: nn.Module, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    return answer(model, tokenizer, [[{"role": "user", "content": p}] for p in prompts], max_new_tokens)
