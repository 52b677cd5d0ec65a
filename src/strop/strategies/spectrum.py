"""Spectrum (Hartford et al. 2024, "Spectrum: Targeted Training on Signal to Noise Ratio"): train only the
weight matrices that carry the most signal, judged by random-matrix theory, and freeze the rest.

For a weight W ∈ R^{m×n} (m ≤ n after transposing) whose entries were pure i.i.d. noise of variance σ²,
the squared singular values divided by n follow the Marchenko–Pastur law with ratio β = m/n, supported
on [σ²(1-√β)², σ²(1+√β)²]; so noise singular values stay below the bulk edge

    ε = σ (√m + √n).

σ is estimated robustly from the median singular value s_med (Gavish & Donoho 2014):
σ̂ = s_med / √(n · μ_β), μ_β the median of the MP law with σ = 1. A matrix's signal-to-noise ratio is the
energy above the edge over the energy below it,

    SNR = Σ_{s_i > ε} s_i² / Σ_{s_i ≤ ε} s_i²,

≈ 0 for a random matrix (the baseline) and large when low-rank structure stands out. Matrices are
ranked within their role (q_proj of every layer against each other, and so on, as Spectrum does) and
the top `spectrum_top_fraction` of each role is trained. `strop spectrum MODEL` prints the ranking and
writes `spectrum_unfrozen_parameters` for a config. The artifact is a complete HF model folder.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field
from torch import nn

from strop.errors import StropError
from strop.run_types import RunConfig
from strop.strategies.base import StrategyParams, is_4bit
from strop.strategies.full import FullStrategy
from strop.strategies.layers import layer_type


class SpectrumParams(StrategyParams):
    spectrum_top_fraction: float = Field(
        0.25,
        gt=0,
        le=1,
        description="(spectrum) Share of each matrix role (per layer type) to train, highest SNR first.",
    )
    spectrum_unfrozen_parameters: list[str] | None = Field(
        None,
        description="(spectrum) Parameter names or regexes to train (as written by `strop spectrum`); overrides spectrum_top_fraction.",
    )


@functools.lru_cache(maxsize=64)
def mp_median(beta: float, points: int = 20001) -> float:
    """Median of the Marchenko–Pastur law with ratio beta ∈ (0, 1] and unit variance.

    Integrated on x = lo + (hi - lo)(1 - cos πt)/2, which turns the density's square-root edges (and its
    1/x pole at x = 0 when beta = 1) into a smooth integrand in t."""
    lo, hi = (1 - math.sqrt(beta)) ** 2, (1 + math.sqrt(beta)) ** 2
    t = np.linspace(0.0, 1.0, points)
    x = lo + (hi - lo) * (1 - np.cos(np.pi * t)) / 2
    half = (hi - lo) / 2 * np.sin(np.pi * t)  # sqrt((hi - x)(x - lo)), and also dx/dt / (π)
    with np.errstate(divide="ignore", invalid="ignore"):
        integrand = np.where(x > 0, half * half * np.pi / (2 * np.pi * beta * x), (hi - lo) / (2 * beta))
    cdf = np.concatenate([[0.0], np.cumsum((integrand[1:] + integrand[:-1]) / 2 * np.diff(t))])
    cdf /= cdf[-1]
    return float(np.interp(0.5, cdf, x))


@dataclass
class MatrixSNR:
    name: str
    shape: tuple[int, int]
    snr: float
    sigma: float
    edge: float
    above: int


def matrix_snr(name: str, weight: torch.Tensor) -> MatrixSNR:
    """SNR of one matrix's singular values against the Marchenko–Pastur bulk edge."""
    w = weight.detach().float()
    m, n = sorted(w.shape)
    s = torch.linalg.svdvals(w).double()
    sigma = float(s.median()) / math.sqrt(n * mp_median(m / n))
    edge = sigma * (math.sqrt(m) + math.sqrt(n))
    energy = s**2
    signal, noise = float(energy[s > edge].sum()), float(energy[s <= edge].sum())
    snr = signal / noise if noise > 0 else math.inf
    return MatrixSNR(name, (weight.shape[0], weight.shape[1]), snr, sigma, edge, int((s > edge).sum()))


def scan_model(model: nn.Module) -> list[MatrixSNR]:
    """SNR of every 2-D weight of the model's linear and embedding layers (tied weights once)."""
    seen, results = set(), []
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, (nn.Linear, nn.Embedding)) or weight is None or weight.dim() != 2:
            continue
        if id(weight) in seen or is_4bit(weight):
            continue
        seen.add(id(weight))
        results.append(matrix_snr(f"{name}.weight", weight))
    return results


def select_top(results: list[MatrixSNR], fraction: float) -> list[str]:
    """Top `fraction` by SNR within each role (rounded half up per role: a role with one matrix, such as
    the embeddings, is trained only from fraction 0.5)."""
    groups: dict[str, list[MatrixSNR]] = {}
    for item in results:
        groups.setdefault(layer_type(item.name), []).append(item)
    chosen = []
    for items in groups.values():
        k = int(math.floor(fraction * len(items) + 0.5))
        chosen += [i.name for i in sorted(items, key=lambda i: -i.snr)[:k]]
    return sorted(chosen, key=lambda n: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", n)])


def matches(name: str, patterns: list[str]) -> bool:
    """A parameter trains if a pattern equals it, is its module prefix, or fully matches it as a regex."""
    for pattern in patterns:
        if name == pattern or name.startswith(pattern.rstrip(".") + ".") or re.fullmatch(pattern.strip("^$"), name):
            return True
    return False


class SpectrumStrategy(FullStrategy):
    name = "spectrum"
    params = SpectrumParams

    def trainable_from_skeleton(self, model: nn.Module, cfg: RunConfig) -> int:
        """The listed parameters, or the top fraction of each layer type (the matrices of one type have one
        size, so which ones win on SNR does not change the count)."""
        params = dict(model.named_parameters())
        if cfg.spectrum_unfrozen_parameters is not None:
            return sum(p.numel() for n, p in params.items() if matches(n, cfg.spectrum_unfrozen_parameters))
        by_type: dict[str, list[int]] = {}
        for name, module in model.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)) and params.get(f"{name}.weight") is module.weight:
                by_type.setdefault(layer_type(f"{name}.weight"), []).append(module.weight.numel())
        return sum(
            sum(sorted(v)[: int(math.floor(cfg.spectrum_top_fraction * len(v) + 0.5))]) for v in by_type.values()
        )

    def adapt(self, model: nn.Module, cfg: RunConfig) -> nn.Module:
        patterns = cfg.spectrum_unfrozen_parameters
        if patterns is None:
            patterns = select_top(scan_model(model), cfg.spectrum_top_fraction)
        selected = 0
        for name, param in model.named_parameters():
            train = matches(name, patterns)
            param.requires_grad_(train)
            selected += train
        if not selected:
            raise StropError(
                "adapter: spectrum selected no parameters to train: raise spectrum_top_fraction, or "
                "check spectrum_unfrozen_parameters against the model's parameter names"
            )
        return model

    def describe(self, cfg: RunConfig) -> str:
        if cfg.spectrum_unfrozen_parameters is not None:
            return f"{len(cfg.spectrum_unfrozen_parameters)} listed parameters"
        return f"top {cfg.spectrum_top_fraction:.0%} of each layer type by SNR"
