"""The merge-method registry: one module per method, every name the config accepts listed here."""

from __future__ import annotations

from strop.errors import StropError
from strop.merge.methods.base import REQUIRED, MergeInputs, MergeMethod
from strop.merge.methods.dare import DARE_LINEAR, DARE_TIES
from strop.merge.methods.linear import LINEAR, MODEL_SOUP
from strop.merge.methods.slerp import SLERP
from strop.merge.methods.task_arithmetic import TASK_ARITHMETIC
from strop.merge.methods.ties import TIES

METHODS: dict[str, MergeMethod] = {
    method.name: method for method in (LINEAR, MODEL_SOUP, SLERP, TASK_ARITHMETIC, TIES, DARE_LINEAR, DARE_TIES)
}


def get_method(name: str) -> MergeMethod:
    """Look a method up by its config name, with the list of valid names in the error."""
    try:
        return METHODS[name]
    except KeyError:
        raise StropError(f"unknown merge_method {name!r}; choose one of: {', '.join(METHODS)}") from None


__all__ = ["METHODS", "REQUIRED", "MergeInputs", "MergeMethod", "get_method"]
