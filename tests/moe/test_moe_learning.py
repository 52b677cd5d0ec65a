"""Learning check on a tiny Mixtral: with the load-balancing loss the expert load stays balanced while the
task loss falls; without it the router leaves experts nearly idle. Also the router panel of loss.png."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

WORDS = ["fox", "dog", "world", "review", "two", "four", "quick", "lazy"]


def train_router(model: Path, tmp_path, aux: float) -> list[dict]:
    from strop.config import load_config
    from strop.train import loop

    data = tmp_path / "data.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {
                    "instruction": f"Say {WORDS[i % 8]} {i}",
                    "output": f"Sentiment: {WORDS[(i * 3 + 1) % 8]} {WORDS[i % 5]}",
                }
            )
            + "\n"
            for i in range(64)
        )
    )
    cfg = {
        "base_model": str(model),
        "adapter": "full",
        "datasets": [{"path": str(data), "type": "alpaca"}],
        "sequence_len": 64,
        "micro_batch_size": 8,
        "max_steps": 40,
        "learning_rate": 1e-2,
        "lr_scheduler": "constant",
        "bf16": False,
        "seed": 3,
        "moe_aux_loss_coef": aux,
        "moe_z_loss_coef": 0.0,
        "output_dir": str(tmp_path / f"out{aux}"),
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(cfg))
    out = loop.train(*load_config(path))
    assert (out / "loss.png").is_file()
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_aux_loss_keeps_experts_balanced(top1_mixtral, tmp_path):
    """Measured here (top-1 of 4 experts, 40 full fine-tuning steps at lr 1e-2, seed 3): the minimum load
    entropy / log E over the last 5 steps is 0.993 with coefficient 1 and 0.842 with none, whose run
    prints collapse warnings (a layer at 0.09 on the way); the loss falls from 5.70 to 0.86 with it.
    Through `strop train` (more threads) seeds 3 and 42 gave 0.975 / 0.959 against 0.725 / 0.707: the
    dynamics at this learning rate are chaotic, so the band is wide."""
    balanced, free = train_router(top1_mixtral, tmp_path, 1.0), train_router(top1_mixtral, tmp_path, 0.0)
    tail = lambda records: sum(r["moe_load_entropy_min"] for r in records[-5:]) / 5  # noqa: E731
    print(
        f"\nload entropy tail: balanced {tail(balanced):.3f}, free {tail(free):.3f}; "
        f"loss {balanced[0]['loss']:.2f} -> {balanced[-1]['loss']:.2f}"
    )
    assert balanced[-1]["loss"] < balanced[0]["loss"] / 4
    assert tail(balanced) >= 0.9, tail(balanced)
    assert tail(free) <= tail(balanced) - 0.1, (tail(free), tail(balanced))


def test_router_panel_is_plotted(tmp_path):
    from strop.train.tracking import plot_losses

    layers = [{"load": [0.5, 0.5], "load_entropy": 1.0, "router_entropy": 0.3, "starved": 0}] * 2
    records = [{"step": s, "loss": 2.0 / s, "moe_router_entropy_mean": 0.3, "moe_layers": layers} for s in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    from PIL import Image

    png = plot_losses(tmp_path / "metrics.jsonl", tmp_path / "loss.png")
    width, height = Image.open(png).size
    assert width > 1.5 * height  # two panels side by side: the loss and the router
