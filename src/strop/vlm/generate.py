"""Answer image conversations with a VLM: `strop chat MODEL --image FILE --prompt ...` and the held-out
check of the shapes example."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from strop.errors import StropError
from strop.models.loading import eval_mode
from strop.vlm.data import Encoder


@torch.no_grad()
def answer_images(
    model: nn.Module,
    processor,
    conversations: list[list[dict]],
    max_new_tokens: int = 64,
    folders: list[Path] | None = None,
    batch_size: int = 8,
) -> list[str]:
    """Greedy replies to conversations whose user turns hold image parts (left-padded batches)."""
    encoder = Encoder(processor, folders or [], allow_urls=False)
    tokenizer = processor.tokenizer
    device = next(model.parameters()).device
    replies = []
    with eval_mode(model):
        for start in range(0, len(conversations), batch_size):
            chunk = conversations[start : start + batch_size]
            images = [
                image for index, c in enumerate(chunk) for image in encoder.images(c, f"conversation {start + index}")
            ]
            texts = [encoder.render(c, generation_prompt=True) for c in chunk]
            side, tokenizer.padding_side = tokenizer.padding_side, "left"
            try:
                inputs = processor(text=texts, images=images or None, return_tensors="pt", padding=True)
            finally:
                tokenizer.padding_side = side
            inputs = {k: v.to(device) for k, v in inputs.items()}
            out = model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
            new = out[:, inputs["input_ids"].shape[1] :]
            replies += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return replies


def image_conversation(prompt: str, images: list[str], system: str | None = None) -> list[dict]:
    """One user turn: the images (local files) first, then the prompt."""
    for image in images:
        if not Path(image).is_file():
            raise StropError(f"--image: file not found: {image}")
    content = [{"type": "image", "path": str(Path(image).resolve())} for image in images]
    content.append({"type": "text", "text": prompt})
    return ([{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []) + [
        {"role": "user", "content": content}
    ]


def chat_processor(target: str, trust_remote_code: bool = False):
    """The processor saved with an adapter or model folder, else its base model's."""
    from strop.models import resolve_model_path
    from strop.models.saved import adapter_base
    from strop.vlm.models import load_processor

    folder = Path(target)
    if (folder / "processor_config.json").is_file() or (folder / "preprocessor_config.json").is_file():
        return load_processor(folder, trust_remote_code)
    base = adapter_base(folder) if (folder / "adapter_config.json").is_file() else target
    return load_processor(resolve_model_path(base, "model"), trust_remote_code)
