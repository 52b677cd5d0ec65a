"""The loop every generator shares: prompts in batches, rows to a resumable sink, a progress bar, a card.

Each batch's sampling is seeded from (seed, index of its first prompt), so a resumed run draws the same
samples for the batches it redoes as a run that was never killed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

from rich.progress import Progress

from strop.datagen.rows import read_prompt_rows
from strop.datagen.sink import Sink, input_stamp
from strop.errors import StropError

PromptItem = tuple[str, dict[str, Any], str]  # (where, row, prompt)


def seed_batch(seed: int, start: int) -> None:
    import torch

    torch.manual_seed(seed * 1_000_003 + start)


def prompt_batches(path: str, sink: Sink, batch_size: int, label: str) -> Iterator[tuple[int, list[PromptItem]]]:
    """(index of the first prompt, batch), skipping what a killed run already committed; each batch is
    committed once the caller has written its rows and asks for the next one."""
    total = sum(1 for _ in read_prompt_rows(path))
    if total == 0:
        raise StropError(f"{path}: no prompts")
    items = islice(read_prompt_rows(path), sink.consumed, None)
    done = sink.consumed
    with Progress(transient=True) as progress:
        task = progress.add_task(label, total=total, completed=done)
        while batch := list(islice(items, batch_size)):
            yield done, batch
            done += len(batch)
            sink.commit(done)
            progress.update(task, completed=done)


def run_prompts(
    path: str,
    out: str,
    key: dict[str, Any],
    card: dict[str, Any] | Callable[[], dict[str, Any]],
    batch_size: int,
    label: str,
    handle_batch: Callable[[int, list[PromptItem], Sink], None],
    resume: bool = True,
) -> Sink:
    """Drive `handle_batch(start, batch, sink)` over the prompt file, then publish `out` with `card`
    (a callable is asked at the end, for counts such as a judge's that the run itself produces)."""
    sink = Sink(out, key={**key, "input": input_stamp(path)}, resume=resume)
    try:
        for start, batch in prompt_batches(path, sink, batch_size, label):
            handle_batch(start, batch, sink)
        sink.finish({**(card() if callable(card) else card), "input": path})
    finally:
        sink.close()
    return sink
