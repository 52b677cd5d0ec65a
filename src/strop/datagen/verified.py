"""Sampling checked by a verifiable reward: difficulty calibration and reasoning traces by rejection sampling.

Both sample k answers per prompt and score them with strop's RL rewards (strop.rl.rewards: math, match,
code, ...; the row carries the reference, e.g. `answer`). An answer passes when its weighted reward
reaches `pass_score`.

- Difficulty: the pass rate p = passed/k estimates how hard a prompt is for the model; prompts it always
  or never solves give no learning signal to RL (GRPO's group advantage is zero when all k agree), so the
  filter keeps p in [low, high] (the "zone of proximal development" selection of e.g. Polaris, DAPO).
- Reasoning traces (rejection-sampling fine-tuning, Yuan et al. 2023; STaR, Zelikman et al. 2022): keep
  up to `keep` distinct passing answers per prompt as chat rows for distillation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from strop.datagen.filters import Difficulty, Item
from strop.datagen.rows import prompt_of
from strop.datagen.runner import PromptItem, run_prompts, seed_batch
from strop.datagen.sink import Sink
from strop.errors import StropError
from strop.rl.rewards import build_rewards, score_rewards

REASONING_SYSTEM = "Think step by step, then give the final answer on its own line as 'Answer: <answer>'."


def parse_reward_specs(specs: Sequence[str]) -> list:
    """`math`, or a JSON object such as '{"type": "match", "field": "label"}', each a reward of strop.rl."""
    parsed = []
    for spec in specs or ["math"]:
        if spec.lstrip().startswith("{"):
            try:
                parsed.append(json.loads(spec))
            except json.JSONDecodeError as err:
                raise StropError(f"--reward {spec}: malformed JSON: {err.msg}") from err
        else:
            parsed.append({"type": spec})
    return build_rewards(parsed)


class Verifier:
    """k samples per prompt from `model`, scored by `rewards`; `pass_score` is the bar for a pass."""

    def __init__(
        self,
        model,
        rewards,
        k: int = 4,
        temperature: float = 1.0,
        pass_score: float = 1.0,
        system: str | None = REASONING_SYSTEM,
        seed: int = 0,
    ):
        self.model, self.rewards, self.k, self.temperature = model, rewards, k, temperature
        self.pass_score, self.system, self.seed = pass_score, system, seed
        self.batches = 0

    def settings(self) -> dict[str, Any]:
        return {
            "model": self.model.name,
            "rewards": [r.name for r in self.rewards],
            "k": self.k,
            "temperature": self.temperature,
            "pass_score": self.pass_score,
            "seed": self.seed,
        }

    def _ask(self, prompt: str) -> str:
        return f"{self.system}\n\n{prompt}" if self.system else prompt

    def sample(self, items: Sequence[PromptItem], start: int) -> list[list[tuple[str, bool]]]:
        """Per prompt, its k (answer, passed) pairs."""
        seed_batch(self.seed, start)
        asks = [self._ask(prompt) for _, _, prompt in items for _ in range(self.k)]
        answers = self.model.complete(asks, self.temperature)
        rows = [row for _, row, _ in items for _ in range(self.k)]
        where = [w for w, _, _ in items for _ in range(self.k)]
        total, _ = score_rewards(self.rewards, asks, answers, rows, where)
        flat = [(a, t >= self.pass_score) for a, t in zip(answers, total)]
        return [flat[i * self.k : (i + 1) * self.k] for i in range(len(items))]

    def pass_counts(self, items: Sequence[Item]) -> list[tuple[int, int]]:
        prompted = [(where, row, prompt_of(row, where)) for where, row in items]
        self.batches += 1
        return [(sum(ok for _, ok in s), self.k) for s in self.sample(prompted, self.batches)]


def difficulty_filter(verifier: Verifier, low: float, high: float) -> Difficulty:
    if not 0 <= low <= high <= 1:
        raise StropError(f"difficulty: need 0 ≤ low ≤ high ≤ 1, got {low}, {high}")
    return Difficulty(verifier.pass_counts, low, high, verifier.settings())


def reasoning_traces(
    verifier: Verifier, prompts: str, out: str, keep: int = 1, batch_size: int = 4, resume: bool = True
) -> Sink:
    """Write up to `keep` distinct passing answers per prompt as chat rows (the prompt without the
    reasoning instruction, so the student learns to reason unasked)."""

    def handle(start: int, batch: list[PromptItem], sink: Sink) -> None:
        for (_, _, prompt), samples in zip(batch, verifier.sample(batch, start)):
            passing = list(dict.fromkeys(a for a, ok in samples if ok and a.strip()))[:keep]
            sink.counts["prompts solved" if passing else "prompts unsolved"] += 1
            for reply in passing:
                sink.write({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]})

    key = {"kind": "traces", "prompts": prompts, "keep": keep, **verifier.settings()}
    card = {"command": "data traces", "dataset_type": "chat", "keep": keep, **verifier.settings()}
    return run_prompts(prompts, out, key, card, batch_size, "rejection sampling", handle, resume)
