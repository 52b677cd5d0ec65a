"""`strop train` on the GPU with strop's kernels (the default) and with `kernels: false`, side by side:
tokens/s, peak GPU memory and the loss of every step. Prints a table; not a test. On the GPU machine:

    PYTHONPATH=src python bench/train_switch.py              # lora and full, kernels on and off
    PYTHONPATH=src python bench/train_switch.py lora         # chosen strategies

Unlike bench/train_speed.py (the kernels against HF+PEFT and Liger on bf16 weights), this times the
command people run: config → `strop.train.loop.train`, weights loaded from a folder, bf16 autocast.
Model: train_speed.py's saved random weights in the Llama-3.2-1B shape with a word-level tokenizer; data:
random words packed into rows of 2048 tokens, 4 rows × 2 accumulation a step; gradient_checkpointing on
(with kernels on, strop's per-layer checkpoint replaces transformers'). Each run is one process (peak
memory and the compiled RoPE are per process). tokens/s is timed around `train_step` after 3 warm-up
steps; peak is torch.cuda.max_memory_allocated over the whole run.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from train_speed import WORDS, model_folder  # the same saved random 1B model (bench/ is this script's folder)

WARM, STEPS = 3, 8
CASES = {
    "lora": {"adapter": "lora", "lora_r": 16, "lora_alpha": 32, "learning_rate": 1e-4},
    "full": {"adapter": "full", "learning_rate": 1e-5},
}


def write_data(path: Path, rows: int = 200, words: int = 1000) -> None:
    rng = random.Random(0)
    lines = [json.dumps({"text": " ".join(f"w{rng.randrange(WORDS)}" for _ in range(words))}) for _ in range(rows)]
    path.write_text("\n".join(lines) + "\n")


def write_config(work: Path, case: str, kernels: bool) -> Path:
    import yaml

    cfg = {
        "base_model": model_folder("1b"),
        "datasets": [{"path": str(work / "data.jsonl"), "type": "text"}],
        "sequence_len": 2048,
        "sample_packing": True,
        "micro_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "max_steps": WARM + STEPS,
        "lr_scheduler": "constant",
        "bf16": True,
        "gradient_checkpointing": True,
        "kernels": kernels,
        "output_dir": str(work / f"out-{case}-{kernels}"),
        **CASES[case],
    }
    path = work / f"{case}-{kernels}.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def one(config_path: str) -> dict:
    """Run `strop train` on one config in this process, timing each optimizer step."""
    import torch

    import strop.train.loop as loop
    from strop.config import load_config

    steps, plain_step = [], loop.train_step

    def timed_step(*args):
        torch.cuda.synchronize()
        start = time.perf_counter()
        metrics = plain_step(*args)
        torch.cuda.synchronize()
        steps.append((time.perf_counter() - start, metrics["tokens"], float(metrics["loss"])))
        return metrics

    loop.train_step = timed_step
    cfg, base = load_config(config_path)
    loop.train(cfg, base, overwrite=True)
    timed = steps[WARM:]
    return {
        "tok_s": sum(n for _, n, _ in timed) / sum(t for t, _, _ in timed),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "losses": [loss for _, _, loss in steps],
    }


def table(results: dict) -> str:
    lines = [
        (
            f"{'work':<6} {'kernels':<8} {'tok/s':>8} {'x off':>6} {'peak GiB':>9} {'x off':>6} "
            f"{'loss 1':>8} {'loss last':>9} {'max |dloss|':>11}"
        )
    ]
    for case in CASES:
        off = results.get((case, False))
        for kernels in (True, False):
            r = results.get((case, kernels))
            if r is None:
                continue
            if "error" in r:
                lines.append(f"{case:<6} {str(kernels):<8} ERROR {r['error'][:160]}")
                continue
            ok = off and "error" not in off
            speed = f"{r['tok_s'] / off['tok_s']:.2f}" if ok else "-"
            memory = f"{r['peak_gib'] / off['peak_gib']:.2f}" if ok else "-"
            drift = f"{max(abs(a - b) for a, b in zip(r['losses'], off['losses'])):.4f}" if ok else "-"
            lines.append(
                f"{case:<6} {str(kernels):<8} {r['tok_s']:>8,.0f} {speed:>6} {r['peak_gib']:>9.2f} "
                f"{memory:>6} {r['losses'][0]:>8.4f} {r['losses'][-1]:>9.4f} {drift:>11}"
            )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--one"]:
        print("RESULT " + json.dumps(one(argv[1])), flush=True)
        return
    cases = argv or list(CASES)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_data(work / "data.jsonl")
        for case in cases:
            for kernels in (True, False):
                proc = subprocess.run(
                    [sys.executable, __file__, "--one", str(write_config(work, case, kernels))],
                    capture_output=True,
                    text=True,
                    env=os.environ | {"COLUMNS": "200"},
                )
                print("\n".join(line for line in proc.stdout.splitlines() if "kernels" in line), flush=True)
                found = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
                results[case, kernels] = json.loads(found[-1][7:]) if found else {"error": proc.stderr.strip()[-400:]}
                print(json.dumps({"case": case, "kernels": kernels, **results[case, kernels]}), flush=True)
                if not found:
                    print(proc.stdout[-3000:], proc.stderr[-3000:], flush=True)
    print(table(results))


if __name__ == "__main__":
    main(sys.argv[1:])
