"""`pass_at_k`: the chance that at least one of k sampled replies is correct, for verifiable tasks.

Correctness comes from strop's RL rewards (strop.rl.rewards): `math` compares the final answer with the
row's `answer`; `code` runs the reply's code against the row's `tests` in the sandbox. A reply counts as
correct when its reward is 1 (all tests pass).

Estimator (Chen et al., 2021, "Evaluating Large Language Models Trained on Code", eq. 1): draw n ≥ k
samples per problem, count the c correct ones, and average over problems

    pass@k = 1 - C(n - c, k) / C(n, k)

which is unbiased, unlike 1 - (1 - c/n)^k. The binomials overflow for large n, so the ratio is taken
in its product form C(n-c, k)/C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from strop.errors import StropError
from strop.evaluation.base import EvalResult, EvaluatorType, Options, Subject, data_rows, last_user_text, read_prompt


class PassAtKOptions(Options):
    reward: Literal["math", "code"] = Field("math", description="What decides correctness: math answers or code tests.")
    reward_options: dict[str, Any] = Field(
        default_factory=dict, description="Options of that reward (e.g. {field: answer}, {sandbox: relaxed})."
    )
    n: int = Field(8, gt=0, description="Samples per problem.")
    k: list[int] = Field([1], description="The k values reported (each <= n).")
    temperature: float = Field(
        0.8, ge=0, description="Sampling temperature (0 = greedy, which makes every sample the same)."
    )
    max_new_tokens: int = Field(256, gt=0, description="Tokens generated per sample.")

    @model_validator(mode="after")
    def _check_k(self) -> PassAtKOptions:
        if not self.k or any(k < 1 or k > self.n for k in self.k):
            raise ValueError(f"k: every value must be in [1, n={self.n}], got {self.k}")
        return self


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with c correct among n samples (product form)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def build(options: PassAtKOptions, base_dir: Path | None):
    from strop.rl.rewards import RewardSpec, build_rewards

    rows = data_rows(options, base_dir)
    prompts = [read_prompt(row, where) for where, row in rows]
    try:
        reward = build_rewards(
            [RewardSpec.model_validate({"type": options.reward, **options.reward_options})], base_dir
        )[0]
    except ValueError as err:
        raise StropError(f"pass_at_k evaluator: {err}") from err

    def evaluate(subject: Subject) -> EvalResult:
        replies = subject.generate(prompts, options.n, options.temperature, options.max_new_tokens)
        correct = []
        for (where, row), prompt, samples in zip(rows, prompts, replies):
            scores = reward.fn([prompt] * len(samples), samples, [row] * len(samples))
            correct.append(sum(score >= 1.0 for score in scores))
        metrics = {f"pass@{k}": sum(pass_at_k(options.n, c, k) for c in correct) / len(correct) for k in options.k}
        shown = [
            {
                "prompt": last_user_text(p),
                "reference": str(row.get("answer", row.get("tests", ""))),
                "reply": s[0],
                "correct": f"{c}/{options.n}",
            }
            for p, (_, row), s, c in list(zip(prompts, rows, replies, correct))[: options.samples]
        ]
        return EvalResult(metrics, shown)

    return evaluate


EVALUATOR = EvaluatorType(PassAtKOptions, build)
