"""Spectrum: SNR against the Marchenko–Pastur edge; top fraction per layer type trains."""

import math

import pytest
import torch
import yaml

from strop.strategies.spectrum import matrix_snr, mp_median, select_top


def test_mp_median_hand_values():
    # β = 1: with x = 4 sin²φ the MP CDF is (2φ + sin 2φ)/π, so the median solves 2φ + sin 2φ = π/2.
    lo, hi = 0.0, math.pi / 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 2 * mid + math.sin(2 * mid) < math.pi / 2 else (lo, mid)
    assert mp_median(1.0) == pytest.approx(4 * math.sin(lo) ** 2, abs=1e-4)  # 0.6528
    assert mp_median(1e-4) == pytest.approx(1.0, abs=1e-3)  # β → 0 concentrates at 1
    # and against simulation: eigenvalues of (1/n) X Xᵀ for a 300×600 Gaussian X
    x = torch.randn(300, 600, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert mp_median(0.5) == pytest.approx(float(torch.linalg.eigvalsh(x @ x.T / 600).median()), rel=0.02)


@pytest.mark.parametrize("shape", [(96, 160), (160, 96), (127, 127)])
def test_noise_is_at_the_random_baseline_and_low_rank_stands_out(shape):
    g = torch.Generator().manual_seed(0)
    sigma = 0.02
    noise = torch.randn(shape, generator=g) * sigma
    result = matrix_snr("noise", noise)
    assert result.sigma == pytest.approx(sigma, rel=0.05)  # the median estimator recovers σ
    assert result.edge == pytest.approx(sigma * (math.sqrt(shape[0]) + math.sqrt(shape[1])), rel=0.05)
    # random baseline: at most a couple of values graze the bulk edge, each worth ~edge²/‖N‖² ≈ 4/min(m, n)
    assert result.above <= 2 and result.snr < 0.1
    u, _ = torch.linalg.qr(torch.randn(shape[0], 4, generator=g))
    v, _ = torch.linalg.qr(torch.randn(shape[1], 4, generator=g))
    signal = u @ torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.5])) @ v.T
    signal *= noise.norm() * math.sqrt(2) / signal.norm()  # twice the noise energy, in 4 directions
    structured = matrix_snr("low-rank", noise + signal)
    assert structured.above == 4 and structured.snr > 1.5 and structured.snr > 20 * result.snr
    assert matrix_snr("scaled", (noise + signal) * 1000).snr == pytest.approx(structured.snr, rel=1e-4)


def test_select_top_per_layer_type():
    from strop.strategies.spectrum import MatrixSNR

    def m(name, snr):
        return MatrixSNR(name, (2, 2), snr, 1.0, 1.0, 0)

    results = [m(f"model.layers.{i}.mlp.down_proj.weight", s) for i, s in enumerate([0.1, 0.9, 0.5, 0.3])]
    results += [m(f"model.layers.{i}.self_attn.q_proj.weight", s) for i, s in enumerate([0.7, 0.2, 0.1, 0.8])]
    results += [m("model.embed_tokens.weight", 5.0)]
    assert select_top(results, 0.25) == [
        "model.layers.1.mlp.down_proj.weight",
        "model.layers.3.self_attn.q_proj.weight",
    ]
    assert "model.embed_tokens.weight" in select_top(results, 0.5)


def test_strategy_trains_only_selected(prepared):
    run = prepared(adapter="spectrum", spectrum_top_fraction=0.5)
    names = set(run.strategy.trainable_parameters(run.model))
    per_type = {}
    for n in names:
        if n.startswith("model.layers."):
            per_type.setdefault(n.split(".", 3)[3], []).append(n)
    assert len(per_type) == 7 and all(len(v) == 1 for v in per_type.values())  # one of two layers per type


def test_command_writes_a_list_the_strategy_uses(tiny_model, tmp_path, prepared, capsys):
    from strop.cli import main

    out = tmp_path / "spectrum.yml"
    assert main(["spectrum", str(tiny_model), "--top-fraction", "0.5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "SNR" in printed and "matrices selected" in printed
    listed = yaml.safe_load(out.read_text())
    assert listed["adapter"] == "spectrum" and listed["spectrum_unfrozen_parameters"]
    run = prepared(**listed)
    assert set(run.strategy.trainable_parameters(run.model)) == set(listed["spectrum_unfrozen_parameters"])
