"""Task mixtures: draw a dataset of `total` rows from several sources by weight, seeded.

The share of source i is p_i ∝ w_i^(1/T): T = 1 keeps the weights, T > 1 flattens them toward uniform
(the temperature sampling of multilingual pre-training, Arivazhagan et al. 2019; mT5), and with no
weight given a source weighs its row count, so T = 1 is size-proportional. Counts are the shares times
`total` rounded by largest remainder (they sum to `total` exactly). A source asked for more rows than it
has is repeated (each row once more before any row twice); the card records it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

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


def mixture_counts(
    sizes: Sequence[int], weights: Sequence[float | None], total: int, temperature: float = 1.0
) -> list[int]:
    """Rows to draw per source: shares ∝ weight^(1/T) (weight = size when None), largest remainder."""
    base = [float(size if w is None else w) for size, w in zip(sizes, weights)]
    scaled = [b ** (1.0 / temperature) if b > 0 else 0.0 for b in base]
    norm = sum(scaled)
    if norm <= 0:
        raise StropError("mixture: every source has weight 0")
    exact = [total * s / norm for s in scaled]
    counts = [int(e) for e in exact]
    order = sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _draw(size: int, count: int, rng: random.Random) -> list[int]:
    """`count` row indices from `size`: without replacement, then whole repeats of a shuffled order."""
    picks = []
    while count > 0:
        take = min(count, size)
        picks += rng.sample(range(size), take)
        count -= take
    return picks


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
        picks = _draw(size, count, rng)
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
