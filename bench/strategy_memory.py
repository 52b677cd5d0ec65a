"""Trainable share and peak RSS of a few training steps per strategy on SmolLM2-135M (CPU), next to
`strop estimate`'s prediction. Not a test (slow): run

    python bench/strategy_memory.py [strategy ...]      # all strategies when none are given

Each strategy runs in its own process (peak RSS is per process). Rows: 4 × 128 tokens (text chunks, so
every row is full), 3 steps, float32 (this CPU has no native bf16), no gradient checkpointing.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SETTINGS = {
    "lora": {"lora_r": 16, "lora_alpha": 32},
    "qlora": {"lora_r": 16, "lora_alpha": 32},
    "dora": {"lora_r": 16, "lora_alpha": 32},
    "rslora": {"lora_r": 16, "lora_alpha": 32},
    "prompt_tuning": {"num_virtual_tokens": 20},
    "prefix_tuning": {"num_virtual_tokens": 20},
    "galore": {"galore_rank": 128, "galore_update_proj_gap": 200},
    "spectrum": {"spectrum_top_fraction": 0.25},
    "lisa": {"lisa_n_layers": 2, "lisa_step_interval": 20},
}
STEPS, BATCH, SEQ = 3, 4, 128


def child(strategy: str, workdir: Path) -> dict:
    import psutil
    import yaml

    import strop.train.estimate as est
    from strop.config import load_config
    from strop.train.loop import prepare, train_step

    proc = psutil.Process()
    text = " ".join(f"The quick brown fox {i} jumps over the lazy dog number {i * 7}." for i in range(400))
    data = workdir / "text.jsonl"
    data.write_text("".join(json.dumps({"text": text}) + "\n" for _ in range(4)))
    cfg_path = workdir / f"{strategy}.yml"
    cfg_path.write_text(
        yaml.safe_dump(
            {
                "base_model": "smollm2-135m-instruct",
                "adapter": strategy,
                "datasets": [{"path": str(data), "type": "text"}],
                "sequence_len": SEQ,
                "micro_batch_size": BATCH,
                "max_steps": STEPS,
                "bf16": False,
                "output_dir": str(workdir / "out"),
                **SETTINGS.get(strategy, {}),
            }
        )
    )
    cfg, base = load_config(cfg_path)
    import peft  # noqa: F401  (imported before the baseline so that its import is not counted as training)

    baseline = proc.memory_info().rss
    predicted = est.estimates_for(cfg)[0][0]
    run = prepare(cfg, base)
    run.model = run.strategy.apply(run.model, cfg)
    run.strategy.upcast(run.model, cfg)
    loaded = proc.memory_info().rss
    trainable, total = run.strategy.count_parameters(run.model)
    optimizer = run.strategy.build_optimizer(run.model, cfg, run.device)
    peak, stop = [loaded], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    run.model.train()
    started = time.perf_counter()
    for step in range(STEPS):
        run.strategy.on_step_start(run.model, step, cfg)
        train_step(run, step, optimizer, None, None)
    seconds = (time.perf_counter() - started) / STEPS
    stop.set()
    thread.join()
    rows = len(run.train_rows)
    return {
        "strategy": strategy,
        "trainable": trainable,
        "total": total,
        "share": trainable / total,
        "baseline_gib": baseline / 2**30,
        "after_load_gib": loaded / 2**30,
        "peak_train_gib": peak[0] / 2**30,
        "maxrss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "s_per_step": seconds,
        "rows": rows,
        "estimate_gib": predicted.peak / 2**30,
        "estimate_trainable": predicted.trainable,
        "estimate_weights_gib": predicted.weights / 2**30,
        "estimate_activations_gib": predicted.activations / 2**30,
    }


def main(names: list[str]) -> None:
    from strop.strategies import STRATEGIES

    names = names or [s for s in STRATEGIES if s != "bitfit"]  # SmolLM2 (Llama) has no biases
    results = []
    for name in names:
        out = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True)
        line = [x for x in out.stdout.splitlines() if x.startswith("{")]
        if not line:
            print(name, "failed:", out.stderr[-2000:])
            continue
        results.append(json.loads(line[-1]))
        r = results[-1]
        print(
            f"{name:14s} share {100 * r['share']:8.3f}%  trainable {r['trainable']:>11,}  after-load "
            f"{r['after_load_gib']:.2f}  peak-train {r['peak_train_gib']:.2f}  estimate+baseline "
            f"{r['estimate_gib'] + r['baseline_gib']:.2f} GiB  {r['s_per_step']:.1f} s/step",
            flush=True,
        )
    Path("bench_strategies_memory.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(child(sys.argv[2], Path(tmp))))
    else:
        main(sys.argv[1:])
