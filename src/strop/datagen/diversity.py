"""Diversity selection: cluster the rows' embeddings, then sample the budget evenly across clusters.

Uniform sampling keeps the dataset's skew (a thousand near-identical arithmetic prompts crowd out the
ten poems); stratifying by cluster and giving every cluster an equal share of the budget (a cluster
smaller than its share gives the rest back to the others) keeps the rare kinds, as in the
cluster-then-sample selection of data-efficient instruction tuning work (e.g. Chen et al. 2023,
"Maybe only 0.5% data is needed"). Embeddings are hashed word unigram+bigram counts, L2-normalised
(no model needed), or any `embed(texts) -> array` such as a model's mean-pooled hidden states.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np

from strop.datagen.filters import Item
from strop.datagen.minhash import words
from strop.datagen.rows import row_text


def hashed_embeddings(texts: Sequence[str], dim: int = 512) -> np.ndarray:
    """Feature-hashed unigram+bigram counts, each row L2-normalised (cosine = dot product)."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, text in enumerate(texts):
        tokens = words(text)
        for feature in tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]:
            digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
            out[i, int.from_bytes(digest, "little") % dim] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms == 0, 1.0, norms)


def model_embedder(target: str, batch_size: int = 16, max_length: int = 256) -> Callable[[Sequence[str]], np.ndarray]:
    """Mean-pooled last hidden states of a model strop loads (padding masked out), L2-normalised."""
    import torch

    from strop.models.loading import eval_mode
    from strop.models.saved import load_for_chat

    model, tokenizer = load_for_chat(target)

    @torch.no_grad()
    def embed(texts: Sequence[str]) -> np.ndarray:
        device, chunks = next(model.parameters()).device, []
        with eval_mode(model):
            for start in range(0, len(texts), batch_size):
                batch = tokenizer(
                    list(texts[start : start + batch_size]),
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                ).to(device)
                hidden = model(**batch, output_hidden_states=True).hidden_states[-1].float()
                mask = batch["attention_mask"].unsqueeze(-1).float()
                chunks.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu().numpy())
        out = np.concatenate(chunks)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    return embed


def _lloyd(points: np.ndarray, k: int, rng: np.random.Generator, iterations: int) -> tuple[np.ndarray, float]:
    """One k-means++ start (Arthur & Vassilvitskii 2007) refined by Lloyd's algorithm: (labels, inertia)."""
    centers = [points[rng.integers(len(points))]]
    for _ in range(1, k):
        dist = np.min([((points - c) ** 2).sum(axis=1) for c in centers], axis=0)
        total = dist.sum()
        centers.append(points[rng.choice(len(points), p=dist / total) if total > 0 else rng.integers(len(points))])
    centers_arr = np.stack(centers)
    labels = np.full(len(points), -1)
    for _ in range(iterations):
        dist = ((points[:, None, :] - centers_arr[None, :, :]) ** 2).sum(axis=2)
        new = dist.argmin(axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        for c in range(k):
            if np.any(labels == c):
                centers_arr[c] = points[labels == c].mean(axis=0)
    return labels, float(dist.min(axis=1).sum())


def kmeans(points: np.ndarray, k: int, seed: int, restarts: int = 8, iterations: int = 50) -> np.ndarray:
    """Cluster labels: the lowest-inertia of several seeded k-means++ starts (one start can settle in
    a poor local optimum that merges a small far cluster into a big one)."""
    rng = np.random.default_rng(seed)
    k = min(k, len(points))
    runs = [_lloyd(points, k, rng, iterations) for _ in range(restarts)]
    return min(runs, key=lambda run: run[1])[0]


def even_allocation(sizes: Sequence[int], budget: int) -> list[int]:
    """Per-cluster quotas summing to min(budget, total): equal shares, a small cluster's surplus
    redistributed (water-filling), leftover units to the largest clusters first."""
    quotas = [0] * len(sizes)
    remaining = min(budget, sum(sizes))
    open_ = [i for i, s in enumerate(sizes) if s > 0]
    while remaining > 0 and open_:
        share = max(remaining // len(open_), 1)
        for i in sorted(open_, key=lambda i: -sizes[i]):
            give = min(share, sizes[i] - quotas[i], remaining)
            quotas[i] += give
            remaining -= give
        open_ = [i for i in open_ if quotas[i] < sizes[i]]
    return quotas


class DiversitySelect:
    """Keep `budget` rows chosen evenly across `clusters` k-means clusters, seeded."""

    name = "diversity"

    def __init__(
        self,
        budget: int,
        clusters: int = 8,
        seed: int = 0,
        embed: Callable[[Sequence[str]], np.ndarray] = hashed_embeddings,
        embedder: str = "hashed-ngrams",
    ):
        self.budget, self.clusters, self.seed, self.embed, self.embedder = budget, clusters, seed, embed, embedder

    def settings(self) -> dict:
        return {"budget": self.budget, "clusters": self.clusters, "seed": self.seed, "embedding": self.embedder}

    def select(self, items: list[Item]) -> tuple[list[Item], list[tuple[Item, tuple[str, str]]]]:
        if len(items) <= self.budget:
            return items, []
        labels = kmeans(self.embed([row_text(row) for _, row in items]), self.clusters, self.seed)
        members = [np.flatnonzero(labels == c) for c in range(labels.max() + 1)]
        quotas = even_allocation([len(m) for m in members], self.budget)
        rng = np.random.default_rng(self.seed)
        chosen: set[int] = set()
        for group, quota in zip(members, quotas):
            chosen.update(int(i) for i in rng.choice(group, size=quota, replace=False))
        kept = [item for i, item in enumerate(items) if i in chosen]
        dropped = [
            (item, ("not selected", f"cluster {labels[i]}: kept {quotas[labels[i]]} of {len(members[labels[i]])}"))
            for i, item in enumerate(items)
            if i not in chosen
        ]
        return kept, dropped
