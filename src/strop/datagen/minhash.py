"""MinHash signatures and LSH banding for near-duplicate search (Broder 1997; Leskovec et al., MMDS ch. 3).

A document is its set of word n-gram shingles. For a random hash h, P[min h(A) = min h(B)] = |A∩B|/|A∪B|
(the Jaccard similarity), so the share of k hash functions whose minima agree estimates Jaccard with
standard error sqrt(J(1-J)/k). The k hashes are h_i(x) = (a_i·x + b_i) mod p over a 31-bit hash x of the
shingle, p = 2^31 - 1 prime, so every product fits in 64 bits.

LSH cuts a signature into b bands of r rows; two documents become candidates when any band matches
whole, which happens with probability 1 - (1 - s^r)^b for similarity s: an S-curve whose step sits near
the threshold when (b, r) are chosen to minimise the area of false positives below it plus false
negatives above it. Candidates are then checked against the threshold on the full signature.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

PRIME = (1 << 31) - 1
_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    """Lower-cased word tokens: punctuation, case and spacing do not make two texts differ."""
    return _WORD.findall(text.lower())


def shingles(text: str, n: int = 5) -> set[str]:
    """The set of word n-grams; a text shorter than n words is one shingle of all its words."""
    tokens = words(text)
    if len(tokens) < n:
        return {" ".join(tokens)} if tokens else set()
    return {" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def _hash31(shingle: str) -> int:
    return int.from_bytes(hashlib.blake2b(shingle.encode("utf-8"), digest_size=8).digest(), "little") % PRIME


class MinHasher:
    """k seeded hash functions; `signature(set)` is their minima (all PRIME for an empty set)."""

    def __init__(self, num_perm: int = 128, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, PRIME, num_perm, dtype=np.uint64)
        self.b = rng.integers(0, PRIME, num_perm, dtype=np.uint64)
        self.num_perm = num_perm

    def signature(self, items: set[str]) -> np.ndarray:
        if not items:
            return np.full(self.num_perm, PRIME, dtype=np.uint64)
        x = np.fromiter((_hash31(s) for s in items), dtype=np.uint64, count=len(items))
        return ((self.a[:, None] * x[None, :] + self.b[:, None]) % PRIME).min(axis=1)


def estimate(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Estimated Jaccard similarity: the share of hash functions whose minima agree."""
    return float(np.mean(sig_a == sig_b))


def bands_for(threshold: float, num_perm: int, fp_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands·rows ≤ num_perm minimising the weighted false-positive area below the
    threshold plus the false-negative area above it, under P(candidate | s) = 1 - (1 - s^r)^b."""
    best, best_cost = (1, num_perm), float("inf")
    low, high = np.linspace(0.0, threshold, 200), np.linspace(threshold, 1.0, 200)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        false_pos = np.trapezoid(1 - (1 - low**rows) ** bands, low)
        false_neg = np.trapezoid((1 - high**rows) ** bands, high)
        cost = float(fp_weight * false_pos + (1 - fp_weight) * false_neg)
        if cost < best_cost:
            best, best_cost = (bands, rows), cost
    return best


class NearDuplicateIndex:
    """Streaming near-duplicate detection: `find(text)` returns the id of an earlier kept text whose
    estimated Jaccard similarity is at least `threshold`, else adds this one under `key` and returns None."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, ngram: int = 5, seed: int = 1):
        self.threshold, self.ngram = threshold, ngram
        self.hasher = MinHasher(num_perm, seed)
        self.bands, self.rows = bands_for(threshold, num_perm)
        self.tables: list[dict[bytes, list[int]]] = [{} for _ in range(self.bands)]
        self.signatures: list[np.ndarray] = []
        self.keys: list[str] = []

    def _band_keys(self, sig: np.ndarray) -> list[bytes]:
        return [sig[i * self.rows : (i + 1) * self.rows].tobytes() for i in range(self.bands)]

    def find(self, text: str, key: str) -> tuple[str, float] | None:
        sig = self.hasher.signature(shingles(text, self.ngram))
        band_keys = self._band_keys(sig)
        seen: set[int] = set()
        for table, band in zip(self.tables, band_keys):
            for other in table.get(band, ()):
                if other in seen:
                    continue
                seen.add(other)
                similarity = estimate(sig, self.signatures[other])
                if similarity >= self.threshold:
                    return self.keys[other], similarity
        index = len(self.signatures)
        self.signatures.append(sig)
        self.keys.append(key)
        for table, band in zip(self.tables, band_keys):
            table.setdefault(band, []).append(index)
        return None
