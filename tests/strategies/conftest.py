"""Fixtures for strategy tests: single-threaded torch and a prepared run."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and they spin when the CPU is shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def prepared(make_config):
    """prepare() + strategy.apply() for a config written by make_config(**overrides)."""
    from strop.config import load_config
    from strop.train.loop import prepare

    def build(**overrides):
        cfg, base = load_config(make_config(**overrides))
        run = prepare(cfg, base)
        run.model = run.strategy.apply(run.model, cfg)
        run.strategy.upcast(run.model, cfg)
        return run

    return build
