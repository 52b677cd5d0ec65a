"""Per-layer helpers for strategies: the decoder blocks (found in strop.models.blocks, which adapters
below this floor use too), a parameter's role across layers, and checking that the module names a
config targets exist in the model."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable

from torch import nn

from strop.errors import StropError

_INDEX = re.compile(r"\.(\d+)\.")


def layer_type(name: str) -> str:
    """`model.layers.7.self_attn.q_proj.weight` → `model.layers.*.self_attn.q_proj.weight`: the name
    with its layer index replaced, so that matrices of the same role can be compared across layers."""
    return _INDEX.sub(".*.", name, count=1)


def _peft_match(name: str, target: str) -> bool:
    """PEFT's rule for a list of target names: the module's full name, or its dotted suffix."""
    return name == target or name.endswith("." + target)


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ in ("Conv1D", "Linear4bit")


def check_target_modules(
    model: nn.Module, targets, key: str, matches: Callable[[str, str], bool] = _peft_match, linear_only: bool = False
) -> None:
    """A StropError naming every entry of `targets` (the config key `key`) that matches no module of the
    model (no linear one when `linear_only`), with the model's linear-layer names to choose from: a typo
    would otherwise adapt nothing (PEFT's own error, a traceback) or, next to a valid name, silently
    leave a layer untrained."""
    if not isinstance(targets, (list, tuple, set)):
        return  # "all-linear" or the library default
    names = [name for name, module in model.named_modules() if name and (_is_linear(module) or not linear_only)]
    missing = [t for t in targets if not any(matches(name, t) for name in names)]
    if not missing:
        return
    linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if _is_linear(module)})
    hints = [
        f"'{t}' (did you mean '{close[0]}'?)" if (close := difflib.get_close_matches(t, linear, n=1)) else f"'{t}'"
        for t in missing
    ]
    raise StropError(
        f"{key}: {', '.join(hints)} not found in {type(model).__name__}; "
        f"its linear layers are: {', '.join(linear) or 'none'}"
    )
