"""The merge config (MERGE.yml): mergekit's shape, validated strictly.

Users arrive with mergekit configs, so the keys are mergekit's (`merge_method`, `base_model`,
`models[].model`, `models[].parameters`, `parameters`, `dtype`), but anything strop does not
implement is rejected by name instead of being silently ignored: a merge that quietly dropped a
`slices:` section or a misspelt `densty:` would produce a plausible but wrong model.

A parameter value is a number/bool, or a list of `{filter, value}` entries picked per tensor name:
the first entry whose `filter` is a substring of the tensor name wins, and an entry without
`filter` matches every tensor (mergekit's convention for slerp's `t`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from strop.errors import StropError
from strop.merge.methods import REQUIRED, MergeMethod, get_method


class FilterValue(BaseModel):
    """One entry of a per-tensor parameter list."""

    model_config = ConfigDict(extra="forbid")
    filter: str | None = None
    value: float | bool


ParamValue = float | bool | list[FilterValue]


class ModelEntry(BaseModel):
    """A model to merge and its per-model parameters (weight, density)."""

    model_config = ConfigDict(extra="forbid")
    model: str
    parameters: dict[str, ParamValue] = {}


class MergeConfig(BaseModel):
    """The whole MERGE.yml."""

    model_config = ConfigDict(extra="forbid")
    merge_method: str
    base_model: str | None = None
    models: list[ModelEntry]
    parameters: dict[str, ParamValue] = {}
    dtype: Literal["float32", "float16", "bfloat16"] | None = None
    seed: int = 0
    output_dir: str | None = None


IGNORED_PARAMS = {"int8_mask"}
"""mergekit memory knobs that change nothing about the result; accepted so configs port as is."""


def _format_error(path: Path, err: ValidationError) -> str:
    """One line per problem, naming the key: pydantic's raw output is hard to act on."""
    lines = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            hint = " (strop does not support mergekit slices; list whole models under `models:`)"
            lines.append(f"unknown key {where!r}" + (hint if item["loc"][0] == "slices" else ""))
        elif item["type"] == "missing":
            lines.append(f"missing required key {where!r}")
        else:
            lines.append(f"{where}: {item['msg']}")
    return f"invalid merge config {path}:\n  " + "\n  ".join(lines)


def load_config(path: str | Path) -> MergeConfig:
    """Read and validate MERGE.yml, including that every parameter suits the chosen method."""
    path = Path(path)
    if not path.is_file():
        raise StropError(f"merge config not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise StropError(f"merge config {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise StropError(f"merge config {path} must be a mapping of keys (merge_method, models, ...)")
    try:
        config = MergeConfig.model_validate(raw)
    except ValidationError as err:
        raise StropError(_format_error(path, err)) from None
    check_parameters(config, get_method(config.merge_method))
    return config


def check_parameters(config: MergeConfig, method: MergeMethod) -> None:
    """Reject parameters the method does not take, require those it needs, and range-check values."""
    if not config.models:
        raise StropError("merge config lists no models under `models:`")
    allowed_global = set(method.global_params) | set(method.model_params) | IGNORED_PARAMS
    _check_keys(config.parameters, allowed_global, method, "parameters")
    for i, entry in enumerate(config.models):
        _check_keys(entry.parameters, set(method.model_params), method, f"models[{i}] ({entry.model}).parameters")
    for key, default in method.global_params.items():
        if default is REQUIRED and key not in config.parameters:
            raise StropError(f"merge_method {method.name} needs `parameters: {{{key}: ...}}`")
    named = [("parameters", config.parameters)] + [
        (f"models[{i}] ({e.model}).parameters", e.parameters) for i, e in enumerate(config.models)
    ]
    for where, params in named:
        for key, value in params.items():
            for scalar in _scalars(value):
                if not math.isfinite(scalar):  # a NaN weight would write a model of NaNs, silently
                    raise StropError(f"{where}: {key} is {scalar}; merge parameters must be finite numbers")
                if method.check is not None:
                    method.check(key, scalar)


def _check_keys(params: dict[str, Any], allowed: set[str], method: MergeMethod, where: str) -> None:
    """Unknown parameter keys are errors that name the key and the accepted ones."""
    for key in params:
        if key not in allowed:
            accepted = ", ".join(sorted(allowed - IGNORED_PARAMS)) or "none"
            raise StropError(f"{where}: merge_method {method.name} takes no parameter {key!r} (accepted: {accepted})")


def _scalars(value: ParamValue) -> list[float | bool]:
    """Every plain value a parameter can take, whether scalar or filtered list."""
    return [entry.value for entry in value] if isinstance(value, list) else [value]


def resolve_param(value: ParamValue, tensor_name: str, key: str = "parameter") -> float | bool:
    """The value of one parameter for one tensor: the first filter that matches its name."""
    if not isinstance(value, list):
        return value
    for entry in value:
        if entry.filter is None or entry.filter in tensor_name:
            return entry.value
    raise StropError(f"no entry of {key!r} matches tensor {tensor_name!r}; end the list with an entry without `filter`")


def resolve_params(defaults: dict[str, Any], *layers: dict[str, ParamValue], tensor_name: str) -> dict[str, Any]:
    """Defaults overlaid by each layer in turn (global, then per model), resolved for one tensor."""
    out: dict[str, Any] = {}
    for key, default in defaults.items():
        value: Any = default
        for layer in layers:
            if key in layer:
                value = resolve_param(layer[key], tensor_name, key)
        out[key] = value
    return out
