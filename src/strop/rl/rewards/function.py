"""`function`: a reward written by the user, `function: "module:name"` or `"path/to/file.py:name"`
(a path relative to the config's folder). It is called as `name(prompts, completions, rows)` and must
return one number per completion.

Every failure of the user's code is a StropError naming the function and, where it knows, the line of
the user's file and the dataset row: a module that does not import (a syntax error, an exception at
import), a wrong return (not a list, wrong length, not numbers), or a function that raises on every
completion. If the batch call raises, the completions are retried one at a time and those that raise
score 0, so one completion the function cannot parse does not stop the run; the first such failure is
printed once as a warning, so that a function broken for some rows is not silently trained on zeros.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import numbers
import sys
import traceback
from pathlib import Path

from pydantic import Field

from strop.errors import StropError
from strop.rl.rewards.base import Options, RewardError, RewardType


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
        except Exception as err:  # noqa: BLE001 - the user's module failed while importing
            raise StropError(f"function reward '{target}': importing {module_name} raised {_describe(err)}") from err
    fn = getattr(module, attribute, None)
    if not callable(fn):
        raise StropError(f"function reward '{target}': {module_name} has no function '{attribute}'")
    return fn


def _load_file(path: Path, target: str):
    if not path.is_file():
        raise StropError(f"function reward '{target}': file not found: {path}")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    spec = importlib.util.spec_from_file_location(f"strop_reward_{path.stem}_{digest}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]  # a .py path always has a spec
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        raise StropError(f"function reward '{target}': {path}:{err.lineno}: syntax error: {err.msg}") from err
    except Exception as err:  # noqa: BLE001 - the user's file failed while importing
        raise StropError(f"function reward '{target}': importing {path} raised {_describe(err)}") from err
    return module


def _describe(err: BaseException) -> str:
    """`ValueError: boom (at my_rewards.py:7)`: the exception and the last line of the user's code
    (outside strop and the standard library) it passed through."""
    not_user = (str(Path(__file__).resolve().parents[2]), sys.prefix, sys.base_prefix)
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith(not_user)]
    at = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(err).__name__}: {err}{at}"


def checked(result, count: int, target: str) -> list[float]:
    """`result` as floats, or a StropError when it is not `count` real numbers."""
    if isinstance(result, (str, bytes)) or not hasattr(result, "__len__") or len(result) != count:
        got = (
            f"length {len(result)}"
            if hasattr(result, "__len__") and not isinstance(result, (str, bytes))
            else type(result).__name__
        )
        raise StropError(
            f"function reward '{target}' must return a list of {count} numbers (one per completion), got {got}"
        )
    scores = []
    for index, value in enumerate(result):
        if not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise RewardError(
                f"function reward '{target}' returned {value!r}: each score must be a finite number", index
            )
        scores.append(float(value))
    return scores


def build(options: FunctionOptions, base_dir: Path | None):
    return scorer(load_function(options.function, base_dir), options.function)


def scorer(fn, target: str):
    """`fn(prompts, completions, rows)` with its output checked and its failures reported (see above)."""
    warned: list[bool] = []

    def one_at_a_time(prompts: list, completions: list[str], rows: list[dict], batch_error: Exception) -> list[float]:
        scores, failures = [], []
        for index, one in enumerate(zip(prompts, completions, rows)):
            try:
                scores += checked(fn(*([item] for item in one)), 1, target)
            except RewardError as err:
                raise RewardError(str(err), index) from err
            except StropError:
                raise
            except Exception as err:  # noqa: BLE001 - a completion the function cannot score: 0
                scores.append(0.0)
                failures.append((index, err))
        if len(failures) == len(completions):
            raise RewardError(f"function reward '{target}' raised {_describe(failures[0][1])}", 0) from batch_error
        if failures and not warned:
            warned.append(True)
            print(
                f"strop: warning: function reward '{target}' raised {_describe(failures[0][1])} on "
                f"{len(failures)} of {len(completions)} completions; they score 0 (said once)",
                file=sys.stderr,
            )
        return scores

    def score(prompts: list, completions: list[str], rows: list[dict]) -> list[float]:
        try:
            return checked(fn(prompts, completions, rows), len(completions), target)
        except StropError:
            raise
        except Exception as batch_error:  # noqa: BLE001 - retried per completion, to find which ones
            return one_at_a_time(prompts, completions, rows, batch_error)

    return score


REWARD = RewardType(FunctionOptions, build)
