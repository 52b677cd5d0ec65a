"""`trl_function`: a reward written for TRL / Axolotl, `function: "module.name"` (Axolotl's
`trl.reward_funcs` entries become these).

TRL's calling convention (GRPOTrainer, conversational data), which Axolotl configs rely on:

    name(prompts=[messages, ...], completions=[[{"role": "assistant", "content": text}], ...],
         **columns) -> list[float]

where `columns` holds every other field of the dataset rows, one list per field (`answer=[...]`). The
module is looked up as `module.py` in the config's folder first, then on the Python path; it is code from
the config's author that runs with your rights, so use configs whose folder you trust. Failures are
reported as for `function` rewards (function.py).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from strop.errors import StropError
from strop.rl.rewards.base import Options, RewardType
from strop.rl.rewards.function import load_function, scorer


class TrlFunctionOptions(Options):
    function: str = Field(description='"module.function": module.py in the config\'s folder, or an importable module.')


def load_dotted(target: str, base_dir: Path | None):
    """`pkg.module.function` from `pkg/module.py` beside the config, else from the Python path."""
    module, _, name = target.rpartition(".")
    if not module or not name:
        raise StropError(f"trl_function reward: '{target}' should be 'module.function'")
    local = Path(base_dir or ".") / f"{module.replace('.', '/')}.py"
    return load_function(f"{local}:{name}" if local.is_file() else f"{module}:{name}", base_dir)


def trl_call(fn):
    """`fn` in TRL's convention, as strop's (prompts, completions, rows) reward."""

    def call(prompts: list, completions: list[str], rows: list[dict]) -> list[float]:
        columns = {key: [row.get(key) for row in rows] for key in (rows[0] if rows else {}) if key != "prompt"}
        return fn(prompts=prompts, completions=[[{"role": "assistant", "content": c}] for c in completions], **columns)

    return call


def build(options: TrlFunctionOptions, base_dir: Path | None):
    return scorer(trl_call(load_dotted(options.function, base_dir)), options.function)


REWARD = RewardType(TrlFunctionOptions, build)
