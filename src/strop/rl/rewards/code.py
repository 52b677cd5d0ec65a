"""`code`: the share of the row's tests that the completion's code passes, run in the sandbox.

The code is the completion's last ```python (or ```py) fenced block, else its last bare ``` block,
else the whole text. The tests (option `field`, default "tests") are a list of strings — each a
statement such as `assert add(2, 2) == 4` — or one string of test code, which counts as a single
test (a JSON-encoded list of strings is read as a list). One sandboxed process per completion runs the
code and then each test in its namespace and reports per-test results the code cannot forge (see
strop/rl/sandbox/); `workers` completions run at once.

`sandbox: strict` (the default) refuses to build the reward where an isolation layer cannot be set up
(bubblewrap missing, user namespaces forbidden, libseccomp missing), naming what to install, before a
model is loaded; `sandbox: relaxed` runs the code with the layers that work and warns loudly.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from pydantic import Field

from strop.errors import StropError
from strop.rl.rewards.base import Options, RewardError, RewardType, row_field
from strop.rl.sandbox import SandboxUnavailable, isolation, run_tests

_PYTHON_BLOCK = re.compile(r"```(?:python3?|py)[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_BARE_BLOCK = re.compile(r"```[ \t]*\n(.*?)```", re.DOTALL)


class CodeOptions(Options):
    field: str = Field("tests", description="Row field holding the tests (list of assert statements, or test code).")
    timeout_s: float = Field(5.0, gt=0, description="Wall-time limit per completion (code and all its tests).")
    memory_mb: int = Field(512, ge=64, description="Address-space limit of the sandboxed process.")
    workers: int = Field(2, ge=1, description="Completions run in parallel.")
    sandbox: Literal["strict", "relaxed"] = Field(
        "strict", description="strict: refuse to run where an isolation layer is missing; relaxed: run anyway, warning."
    )


def extract_code(text: str) -> str:
    blocks = _PYTHON_BLOCK.findall(text) or _BARE_BLOCK.findall(text)
    return blocks[-1] if blocks else text


def row_tests(row: dict, field: str) -> list[str]:
    tests = row_field(row, field, "code")
    if isinstance(tests, str) and tests.lstrip().startswith("["):
        try:
            tests = json.loads(tests)
        except ValueError:
            pass
    tests = [tests] if isinstance(tests, str) else tests
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        raise StropError(
            f"code reward: row field '{field}' must be a non-empty list of test strings or a string of test code"
        )
    return tests


def build(options: CodeOptions, base_dir: Path | None):
    if options.sandbox == "strict":
        isolation.plan(isolation.Layers(), "strict")  # fails now, not at the first rollout
    else:
        isolation.warn_relaxed()

    def score_one(completion: str, tests: list[str]) -> float:
        try:
            return run_tests(
                extract_code(completion), tests, options.timeout_s, options.memory_mb, sandbox=options.sandbox
            ).fraction
        except SandboxUnavailable:
            raise
        except Exception:
            return 0.0

    def score(prompts: list, completions: list[str], rows: list[dict]) -> list[float]:
        tests = []
        for index, row in enumerate(rows):
            try:
                tests.append(row_tests(row, options.field))
            except StropError as err:  # said with the row it is about
                raise RewardError(str(err), index) from err
        with ThreadPoolExecutor(max_workers=options.workers) as pool:
            return list(pool.map(score_one, completions, tests))

    return score


REWARD = RewardType(CodeOptions, build)
