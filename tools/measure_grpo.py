"""Does GRPO raise held-out accuracy? Measured on SmolLM2-135M-Instruct with the RL example.

Trains src/strop/examples/rl/grpo.yml (LoRA, the `math` reward on arithmetic word problems), then
answers the held-out problems (names and items unseen in training) greedily with the base model and
with the trained adapter, and scores both with the same `math` reward: the share answered right.
Prints the reward curve (mean reward of the sampled completions, per step, in blocks) as well.

    python tools/measure_grpo.py [--steps 40] [--output-dir outputs/grpo-measure]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from strop.config import load_config
from strop.data.preference import encode_prompt
from strop.data.readers import read_rows
from strop.models.saved import load_for_chat
from strop.rl.rewards import RewardSpec, build_rewards, score_rewards
from strop.rl.rollout import SamplingParams, sample
from strop.train.loop import train

EXAMPLE = Path(__file__).resolve().parents[1] / "src" / "strop" / "examples" / "rl"


def held_out_accuracy(target: str, rows: list[dict], max_new_tokens: int) -> float:
    model, tokenizer = load_for_chat(target)
    prompts = [encode_prompt(tokenizer, r["prompt"])[1] for r in rows]
    completions = sample(model, tokenizer, prompts, SamplingParams(max_new_tokens, temperature=0.0))
    reward = build_rewards([RewardSpec(type="math")], None)
    total, _ = score_rewards(reward, [r["prompt"] for r in rows], [c.text for c in completions], rows)
    return sum(total) / len(total)


def reward_curve(metrics: Path, blocks: int = 4) -> list[tuple[str, float]]:
    rewards = [(r["step"], r["reward"]) for r in map(json.loads, metrics.read_text().splitlines()) if "reward" in r]
    size = max(1, len(rewards) // blocks)
    return [
        (f"steps {part[0][0]}-{part[-1][0]}", sum(v for _, v in part) / len(part))
        for part in (rewards[i : i + size] for i in range(0, len(rewards), size))
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--output-dir", default="outputs/grpo-measure")
    args = parser.parse_args()
    rows = [row for _, row in read_rows(str(EXAMPLE / "held_out.jsonl"))]
    cfg, base = load_config(EXAMPLE / "grpo.yml", [f"max_steps={args.steps}", f"output_dir={args.output_dir}"])
    before = held_out_accuracy(cfg.base_model, rows, cfg.max_completion_length)
    started = time.perf_counter()
    out = train(cfg, base, overwrite=True)
    minutes = (time.perf_counter() - started) / 60
    after = held_out_accuracy(str(out), rows, cfg.max_completion_length)
    print(
        f"\nGRPO, {args.steps} steps ({minutes:.1f} min, {torch.get_num_threads()} threads): "
        f"held-out accuracy {before:.3f} -> {after:.3f} on {len(rows)} problems"
    )
    for label, value in reward_curve(out / "metrics.jsonl"):
        print(f"  mean reward, {label}: {value:.3f}")
    print(f"  reward and loss curves: {out / 'loss.png'}")


if __name__ == "__main__":
    main()
