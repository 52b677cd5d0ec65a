"""`strop data mix`: write a dataset of `total` rows drawn from several files by weight, seeded.

The counts and the draw are strop/data/mixture.py's, which `strop train` also uses for `datasets:` with
weights; here the mixture becomes a file, and its card records each source's weight, size and draw (and
whether it was repeated).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from strop.data.mixture import draw, mixture_counts
from strop.data.readers import read_rows
from strop.datagen.sink import Sink
from strop.errors import StropError


def parse_source(spec: str) -> tuple[str, float | None]:
    """`data.jsonl:0.3` → (path, 0.3); `data.jsonl` → (path, None)."""
    path, sep, weight = spec.rpartition(":")
    if sep and path:
        try:
            value = float(weight)
        except ValueError:
            return spec, None
        if not value >= 0:
            raise StropError(f"mixture source {spec}: the weight must be ≥ 0, got {weight}")
        return path, value
    return spec, None


def mix(sources: Sequence[str], out: str, total: int, seed: int = 0, temperature: float = 1.0) -> dict:
    """Write the mixture, shuffled; returns the per-source counts (also in the card)."""
    parsed = [parse_source(s) for s in sources]
    sizes = [sum(1 for _ in read_rows(path)) for path, _ in parsed]
    for (path, _), size in zip(parsed, sizes):
        if size == 0:
            raise StropError(f"{path}: no rows to mix")
    counts = mixture_counts(sizes, [w for _, w in parsed], total, temperature)
    rng = random.Random(seed)
    chosen: list[dict] = []
    for (path, _), size, count in zip(parsed, sizes, counts):
        picks = draw(size, count, rng)
        wanted: dict[int, int] = {}
        for index in picks:
            wanted[index] = wanted.get(index, 0) + 1
        for index, (_, row) in enumerate(read_rows(path)):
            chosen += [row] * wanted.get(index, 0)
    rng.shuffle(chosen)
    sink = Sink(out, key={}, resume=False)
    try:
        for row in chosen:
            sink.write(row)
        summary = {
            str(Path(path)): {"weight": w, "rows": size, "drawn": count, "repeated": count > size}
            for (path, w), size, count in zip(parsed, sizes, counts)
        }
        sink.finish(
            {"command": "data mix", "seed": seed, "temperature": temperature, "total": total, "sources": summary}
        )
    finally:
        sink.close()
    return summary
