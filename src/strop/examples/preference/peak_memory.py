"""Peak RSS of a DPO run on SmolLM2-135M with cached reference log-probs vs. a second model copy as the
reference (what a trainer without the cache holds). Each variant runs in a fresh process:

    python -m strop.examples.preference.peak_memory [--adapter full|lora] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile


def _child(mode: str, adapter: str, steps: int, out: str) -> None:
    import torch

    from strop.config import load_config
    from strop.examples.preference.measure import HERE
    from strop.objectives import preference_common
    from strop.train.loop import train

    overrides = [
        f"adapter={adapter}",
        f"max_steps={steps}",
        f"output_dir={out}",
        "sample_prompts=null",
        f"datasets=[{{path: {HERE / 'held_out.jsonl'}, type: dpo}}]",
    ]  # 24 pairs: a short run
    if mode == "copy":
        from strop.models import load_model, resolve_model_path

        cfg, _ = load_config(HERE / "dpo.yml")
        reference = load_model(resolve_model_path(cfg.base_model)).eval().requires_grad_(False)

        def copy_reference(model, batch, reference_context):
            with torch.no_grad():
                return preference_common.sequence_logps(reference, batch)[0]

        preference_common.live_reference_logps = copy_reference
        overrides.append("precompute_ref_log_probs=false")
    cfg, base = load_config(HERE / "dpo.yml", overrides)
    train(cfg, base, overwrite=True)
    print(
        json.dumps(
            {
                "mode": mode,
                "adapter": adapter,
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", default="full")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--child", choices=["cached", "copy"])
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.adapter, args.steps, args.out)
        return
    for mode in ("cached", "copy"):
        with tempfile.TemporaryDirectory() as out:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "strop.examples.preference.peak_memory",
                    "--child",
                    mode,
                    "--adapter",
                    args.adapter,
                    "--steps",
                    str(args.steps),
                    "--out",
                    out,
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            print(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
