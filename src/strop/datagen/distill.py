"""Sequence-level distillation: a teacher answers a prompt set, giving a chat dataset (`strop generate`).

Sequence-level distillation (Kim & Rush 2016) trains the student on the teacher's own outputs instead of
its logits, which works across tokenizers and is how reasoning traces are distilled: ask the teacher for
its reasoning with `system`, and the student learns to produce it. The output is a `chat` JSONL file
that `strop train` reads directly; it appears when complete and a killed run resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path

from strop.datagen.runner import PromptItem, run_prompts, seed_batch
from strop.datagen.sink import Sink


def generate_dataset(
    teacher: str,
    prompts_path: str,
    out: str,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    system: str | None = None,
    batch_size: int = 8,
    seed: int = 0,
    resume: bool = True,
) -> Path:
    from strop.models.generate import answer
    from strop.models.saved import load_for_chat

    model, tokenizer = load_for_chat(teacher)
    prefix = [{"role": "system", "content": system}] if system else []

    def handle(start: int, batch: list[PromptItem], sink: Sink) -> None:
        seed_batch(seed, start)
        conversations = [prefix + [{"role": "user", "content": p}] for _, _, p in batch]
        for conversation, reply in zip(
            conversations, answer(model, tokenizer, conversations, max_new_tokens, temperature, batch_size)
        ):
            sink.write({"messages": conversation + [{"role": "assistant", "content": reply}]})

    key = {
        "kind": "generate",
        "teacher": teacher,
        "prompts": prompts_path,
        "t": temperature,
        "system": system,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
    }
    card = {
        "command": "generate",
        "dataset_type": "chat",
        "teacher": teacher,
        "temperature": temperature,
        "max_new_tokens": max_new_tokens,
        "system": system,
        "seed": seed,
    }
    return run_prompts(prompts_path, out, key, card, batch_size, "teacher writing", handle, resume).out
