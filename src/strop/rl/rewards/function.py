"""`function`: a reward written by the user, `function: "module:name"` or `"path/to/file.py:name"`
(a path relative to the config's folder). It is called as `name(prompts, completions, rows)` and must
return one number per completion.

A wrong return (not a list, wrong length, not numbers) is a StropError naming the function. If the
batch call raises, the completions are retried one at a time and those that raise score 0, so one
completion the function cannot parse does not stop the run; if every one of them raises, the function
is broken and its error is reported.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import numbers
from pathlib import Path

from pydantic import Field

from strop.errors import StropError
from strop.rl.rewards.base import Options, RewardType


class FunctionOptions(Options):
    function: str = Field(description='"module:function" or "path/to/file.py:function" (relative to the config).')


def load_function(target: str, base_dir: Path | None):
    """Import `target` ("module:name" or "file.py:name") and return the callable."""
    module_name, sep, attribute = target.rpartition(":")
    if not sep or not module_name or not attribute:
        raise StropError(f"function reward: '{target}' should be 'module:function' or 'path/file.py:function'")
    if module_name.endswith(".py") or "/" in module_name:
        module = _load_file(Path(base_dir or ".") / module_name, target)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise StropError(f"function reward '{target}': cannot import {module_name}: {err}") from err
    fn = getattr(module, attribute, None)
    if not callable(fn):
        raise StropError(f"function reward '{target}': {module_name} has no function '{attribute}'")
    return fn


def _load_file(path: Path, target: str):
    if not path.is_file():
        raise StropError(f"function reward '{target}': file not found: {path}")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    spec = importlib.util.spec_from_file_location(f"strop_reward_{path.stem}_{digest}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def checked(result, count: int, target: str) -> list[float]:
    """`result` as floats, or a StropError when it is not `count` real numbers."""
    if isinstance(result, (str, bytes)) or not hasattr(result, "__len__") or len(result) != count:
        got = f"length {len(result)}" if hasattr(result, "__len__") else type(result).__name__
        raise StropError(f"function reward '{target}' must return a list of {count} numbers (one per completion), got {got}")
    scores = []
    for value in result:
        if not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise StropError(f"function reward '{target}' returned {value!r}: each score must be a finite number")
        scores.append(float(value))
    return scores


def build(options: FunctionOptions, base_dir: Path | None):
    fn, target = load_function(options.function, base_dir), options.function

    def score(prompts: list, completions: list[str], rows: list[dict]) -> list[float]:
        try:
            return checked(fn(prompts, completions, rows), len(completions), target)
        except StropError:
            raise
        except Exception as batch_error:
            scores, failures = [], 0
            for one in zip(prompts, completions, rows):
                try:
                    scores += checked(fn(*([item] for item in one)), 1, target)
                except StropError:
                    raise
                except Exception:
                    scores.append(0.0)
                    failures += 1
            if failures == len(completions):
                raise StropError(f"function reward '{target}' raised {type(batch_error).__name__}: {batch_error}") from batch_error
            return scores

    return score


REWARD = RewardType(FunctionOptions, build)
