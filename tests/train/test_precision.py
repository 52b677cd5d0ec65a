"""Which dtype a run computes in: `bf16: true` on a CPU without native bf16 falls back to fp32, and says so."""

from types import SimpleNamespace

import pytest
import torch

from strop.errors import StropError
from strop.runtime import precision

CPU = torch.device("cpu")


def _cfg(bf16, fp16=False):
    return SimpleNamespace(bf16=bf16, fp16=fp16)


@pytest.mark.parametrize(
    ("capability", "bf16", "expected"),
    [
        ("AVX2", True, None),
        ("AVX2", "auto", None),
        ("AVX512", True, torch.bfloat16),
        ("AMX", "auto", torch.bfloat16),
        ("AVX512", False, None),
    ],
)
def test_cpu_autocast_follows_native_bf16(monkeypatch, capability, bf16, expected):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert precision.autocast_dtype(_cfg(bf16), CPU) is expected
    note = precision.bf16_fallback_note(_cfg(bf16), CPU)
    assert (note is not None) == (bf16 is True and capability == "AVX2")
    if note:
        assert "AVX2" in note and "fp32" in note


def test_fp16_on_the_cpu_is_refused():
    with pytest.raises(StropError, match="fp16"):
        precision.autocast_dtype(_cfg(False, fp16=True), CPU)


def test_the_plan_notes_the_fallback(monkeypatch, make_config, capsys):
    from strop.config import load_config
    from strop.train.loop import train

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    cfg, base = load_config(make_config(bf16=True))
    train(cfg, base, dry_run=True)
    assert "no native bf16 matmul" in capsys.readouterr().out
