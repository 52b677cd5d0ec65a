"""The training config: one flat YAML file with Axolotl's key names, validated with pydantic.

Why flat and Axolotl-named: practitioners already have these files. Why pydantic: a typo or a wrong type
is reported before a model is loaded, naming the key, and an unknown key names the closest valid one.
Keys that belong to capabilities strop does not have yet are refused with a message that says so,
instead of being silently ignored.
"""

from __future__ import annotations

import difflib
import functools
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from strop.axolotl_keys import AxolotlParams, drop_blank_defaults, translate
from strop.data.axolotl_types import AxolotlDatasetKeys, translate_datasets
from strop.data.mixture import is_mixture
from strop.data.replay import ReplaySpec
from strop.errors import StropError
from strop.runtime.distributed import FsdpParams


class DatasetSpec(AxolotlDatasetKeys):
    """One entry of `datasets:`: a local file (JSONL, JSON, Parquet, CSV) or a hub dataset name."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="File path (relative to the config file or the working folder) or hub dataset id.")
    type: str = Field(
        description="Row format: alpaca, chat (sharegpt accepted), completion, text, or an objective's own (e.g. dpo pairs)."
    )
    split: str = Field("train", description="Split to read when path is a hub dataset.")
    name: str | None = Field(None, description="Hub dataset configuration (subset) name.")
    weight: float | None = Field(
        None,
        ge=0,
        description="Task mixture (SFT): this dataset's share of the training examples is weight^(1/T) over "
        "the sum (T = mixture_temperature); unset weighs its example count.",
    )


class Config(BaseModel):
    """The keys every run has. Each objective and strategy adds its own small `params` model; the class
    `config_class()` returns has all of them, flat, as Axolotl configs are. Descriptions double as
    `strop config --schema` help."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    base_model: str = Field(
        "smollm2-135m-instruct", description="Hub id, local HF folder, GGUF file, or the alias smollm2-135m-instruct."
    )
    model_type: str | None = Field(
        None, description="Expected architecture class (e.g. LlamaForCausalLM); checked against the model's config."
    )
    tokenizer_config: str | None = Field(
        None, description="Tokenizer folder or hub id when it differs from base_model."
    )
    trust_remote_code: bool = Field(
        False, description="Allow model code from the hub to run. Off unless you trust the source."
    )
    chat_template: str | None = Field(
        None, description="'chatml' to force ChatML; default: the tokenizer's own template (ChatML if it has none)."
    )

    adapter: str | None = Field(
        None, description="Update strategy: lora, or full/none/empty for full fine-tuning (see the strategy matrix)."
    )
    rl: str | None = Field(None, description="Objective other than SFT (preference or RL); empty means SFT.")

    datasets: list[DatasetSpec] = Field(description="Training data: list of {path, type, split?, name?}.")
    replay: ReplaySpec | None = Field(
        None,
        description="Continual fine-tuning: {path, type, share} of general data mixed into the training rows "
        "(share 0.2 = a fifth of the mixture) so the model keeps rehearsing it (strop/data/replay.py).",
    )
    val_set_size: float = Field(
        0.0, ge=0, description="Held-out share (< 1) or count (>= 1) of examples for eval loss."
    )
    mixture_temperature: float | None = Field(
        None,
        gt=0,
        description="Task mixture (SFT): sample datasets ∝ weight^(1/T); T > 1 flattens toward uniform "
        "(default 1 when any dataset has a weight).",
    )
    sequence_len: int = Field(2048, gt=8, description="Maximum tokens per example (and per packed row).")
    excess_length_strategy: Literal["drop", "truncate", "error"] = Field(
        "drop", description="What to do with examples longer than sequence_len."
    )
    sample_packing: bool = Field(
        False, description="Pack several examples into one row, with no attention across them."
    )
    train_on_inputs: bool = Field(False, description="Also train on prompt tokens (default: response tokens only).")

    micro_batch_size: int = Field(1, gt=0, description="Rows per forward pass.")
    gradient_accumulation_steps: int = Field(1, gt=0, description="Micro-batches per optimizer step.")
    num_epochs: float = Field(1.0, gt=0, description="Passes over the training data (used when max_steps is not set).")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    warmup_ratio: float | None = Field(None, ge=0, lt=1, description="Warmup as a share of all steps.")
    warmup_steps: int | None = Field(None, ge=0, description="Warmup steps (takes precedence over warmup_ratio).")
    lr_scheduler: Literal["cosine", "linear", "constant", "warmup_stable_decay"] = Field(
        "cosine",
        description="Decay after warmup; warmup_stable_decay holds the peak, then decays (lr_scheduler_kwargs).",
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay.")
    max_grad_norm: float | None = Field(1.0, description="Clip the global gradient norm to this; null or 0 disables.")
    optimizer: Literal[
        "adamw_torch",
        "adamw_torch_fused",
        "adamw",
        "adamw_bnb_8bit",
        "adamw_8bit",
        "paged_adamw_8bit",
        "paged_adamw_32bit",
        "adamw_torch_8bit",
        "adamw_torch_4bit",
    ] = Field(
        "adamw_torch",
        description="AdamW; fused kernels wherever the device has them. 8-bit states: adamw_bnb_8bit = "
        "adamw_8bit, paged_adamw_8bit (bitsandbytes), adamw_torch_8bit/4bit (torchao).",
    )
    adam_beta1: float = Field(0.9, description="AdamW beta1.")
    adam_beta2: float = Field(0.999, description="AdamW beta2.")
    adam_epsilon: float = Field(1e-8, description="AdamW epsilon.")
    seed: int = Field(42, description="Seed for initialisation, data order and dropout.")

    bf16: bool | Literal["auto"] = Field(
        "auto", description="bf16 autocast: auto picks it where the device supports it."
    )
    fp16: bool = Field(False, description="fp16 autocast with loss scaling (CUDA only).")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")

    logging_steps: int = Field(1, gt=0, description="Log metrics every N steps.")
    eval_steps: int | None = Field(
        None, gt=0, description="Eval loss (when val_set_size > 0) and `evaluators` every N steps (and at the end)."
    )
    evaluators: list[dict[str, Any]] | None = Field(
        None,
        description="Evaluators run every eval_steps and at the end: [{type: match|pass_at_k|preference|win_rate|perplexity, data, ...}] (see README, Evaluation).",
    )
    eval_forgetting: str | dict[str, Any] | None = Field(
        None,
        description="General held-out set (file or evaluator spec): base and tuned are scored on it and on the first evaluator at the end (forgetting.json).",
    )
    save_steps: int | None = Field(None, gt=0, description="Write a checkpoint every N steps (and at the end).")
    save_total_limit: int | None = Field(2, gt=0, description="Keep at most this many checkpoints.")
    output_dir: str = Field("./outputs/run", description="Where checkpoints, the final model/adapter and metrics go.")
    hub_private_repo: bool = Field(
        True, description="Create the hub_model_id repository private (as Axolotl does); false: public."
    )

    sample_prompts: list[str] | None = Field(
        None, description="Prompts answered before and after training, printed side by side."
    )
    sample_max_new_tokens: int = Field(48, gt=0, description="Tokens generated per sample prompt.")
    fsdp: FsdpParams | None = Field(
        None,
        description="Under torchrun: {sharding: full_shard|shard_grad_op|no_shard, cpu_offload, activation_checkpointing}.",
    )

    if TYPE_CHECKING:
        # The class config_class() builds adds every objective's and strategy's keys: statically they read as Any.
        def __getattr__(self, name: str) -> Any: ...

    @field_validator("learning_rate", "adam_epsilon", "weight_decay", mode="before")
    @classmethod
    def _yaml_float(cls, value: Any) -> Any:
        # YAML 1.1 reads 2e-4 (no dot) as a string; accept it as the number everyone means.
        return float(value) if isinstance(value, str) else value

    @field_validator("evaluators")
    @classmethod
    def _evaluator_specs(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        from strop.evaluation import check_specs

        try:
            check_specs(value or [])
        except StropError as err:
            raise ValueError(str(err)) from None
        return value

    @model_validator(mode="after")
    def _check(self) -> Config:
        from strop.objectives import OBJECTIVES, known_dataset_types
        from strop.strategies import STRATEGIES

        if not self.datasets:
            raise ValueError("datasets: at least one dataset is needed")
        if self.fp16 and self.bf16 is True:
            raise ValueError("bf16 and fp16 are both on: choose one")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"adapter: unknown strategy '{self.adapter}' (known: {', '.join(sorted(STRATEGIES))})")
        if getattr(self, "master_weights", "fp32") == "bf16":
            self._check_bf16_masters(STRATEGIES[self.strategy])
        if self.objective not in OBJECTIVES:
            raise ValueError(f"rl: unknown objective '{self.rl}' (known: {', '.join(sorted(OBJECTIVES))})")
        for index, spec in enumerate(self.datasets):
            if spec.type not in known_dataset_types():
                raise ValueError(
                    f"datasets[{index}].type: unknown type '{spec.type}' "
                    f"(known: {', '.join(sorted(known_dataset_types()))})"
                )
        self._check_mixture()
        if self.replay is not None:
            if is_mixture(self):
                raise ValueError(
                    "replay: with weighted datasets (weight: / mixture_temperature), give the general data a "
                    "weight in datasets: instead of a replay share"
                )
            self._check_replay(self.replay, OBJECTIVES[self.objective])
        return self

    def _check_bf16_masters(self, strategy) -> None:
        where = "master_weights: bf16"
        if not strategy.supports_bf16_masters:
            raise ValueError(
                f"{where} is for strategies that train the model's own weights with AdamW (full, spectrum, "
                f"lisa, bitfit), not {self.strategy}"
            )
        if self.fp16:
            raise ValueError(f"{where} stores weights in bf16, so it computes in bf16: drop fp16")
        if self.bf16 is False:
            raise ValueError(f"{where} stores weights in bf16, so it computes in bf16: set bf16 to true or auto")
        if self.optimizer not in ("adamw_torch", "adamw_torch_fused", "adamw"):
            raise ValueError(
                f"{where} has its own AdamW (bf16 states, stochastic rounding); optimizer {self.optimizer} "
                "keeps states of its own: use adamw_torch, or master_weights: fp32"
            )
        if self.fsdp is not None:
            raise ValueError(f"{where} is not combined with FSDP2 yet: drop fsdp, or use fp32")

    def _check_mixture(self) -> None:
        if not is_mixture(self):
            return
        if self.objective != "sft":
            key = next(
                (f"datasets[{i}].weight" for i, s in enumerate(self.datasets) if s.weight is not None),
                "mixture_temperature",
            )
            raise ValueError(
                f"{key}: task mixtures are drawn for SFT datasets; objective {self.objective} reads its datasets whole"
            )
        if not any(spec.weight != 0 for spec in self.datasets):
            raise ValueError("datasets[].weight: every dataset has weight 0; give at least one a positive weight")

    def _check_replay(self, replay: ReplaySpec, objective) -> None:
        """Replay rows go through the objective's own loader, so it must read their type, and it must
        be a loader that reads rows (SFT-style or preference), not RL prompts or image rows."""
        from strop.objectives.rl_common import RLObjective
        from strop.objectives.vision import VISION_OBJECTIVES

        if isinstance(objective, RLObjective) or objective.name in VISION_OBJECTIVES:
            raise ValueError(
                f"replay: mixes general rows into SFT-style and preference data; rl: {objective.name} samples "
                "prompts (or image rows) instead, so add the general prompts to datasets: directly"
            )
        if replay.type not in objective.dataset_types:
            raise ValueError(
                f"replay.type: '{replay.type}' rows are not read by {objective.name} "
                f"(it reads {', '.join(sorted(objective.dataset_types))}); replay general data of one of those types"
            )

    @property
    def strategy(self) -> str:
        return "full" if self.adapter in (None, "none", "full") else str(self.adapter)

    @property
    def fsdp_refusal(self) -> str | None:
        """Why this run's strategy cannot shard under FSDP2 (its `fsdp_unsupported`), or None."""
        from strop.strategies import STRATEGIES

        return STRATEGIES[self.strategy].fsdp_unsupported

    @property
    def objective(self) -> str:
        """`rl`, else what `reward_model` or the dataset types imply (SFT for SFT formats)."""
        from strop.objectives import objective_name

        return objective_name(self)


# Keys that later capabilities will own: refused clearly until they exist.
NOT_YET_SUPPORTED = {
    "deepspeed": "DeepSpeed (strop uses FSDP2; multi-GPU issue)",
}


class AxolotlKeys:
    """Axolotl's keys strop implements, registered like an extension's params (axolotl_keys.py)."""

    params = AxolotlParams


@functools.cache
def config_class() -> type[Config]:
    """Config plus the params of every registered objective and strategy, and the MoE keys, flat."""
    from strop.moe.params import MoeParams
    from strop.objectives import OBJECTIVES
    from strop.strategies import STRATEGIES

    fields: dict[str, Any] = {}
    for params in [
        *(getattr(e, "params", None) for e in [*OBJECTIVES.values(), *STRATEGIES.values(), AxolotlKeys]),
        MoeParams,
    ]:
        for name, field in params.model_fields.items() if params else ():
            fields.setdefault(name, (field.annotation, field))
    return create_model("StropConfig", __base__=Config, **fields)


def key_owners() -> dict[str, str]:
    """Which objective or strategy each extension key belongs to (for the schema listing)."""
    from strop.objectives import OBJECTIVES
    from strop.strategies import STRATEGIES

    owners: dict[str, str] = {}
    for kind, registry in (("objective", OBJECTIVES), ("strategy", STRATEGIES)):
        for name, extension in registry.items():
            params = getattr(extension, "params", None)
            for key in params.model_fields if params else ():
                owners.setdefault(key, f"{kind} {name}")
    return owners


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid config"]
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        lines.append(f"  {where}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def _check_keys(raw: dict[str, Any], source: str) -> None:
    valid = list(config_class().model_fields)
    for key in raw:
        if key in valid:
            continue
        if key in NOT_YET_SUPPORTED:
            raise StropError(f"{source}: key '{key}' is not supported yet: {NOT_YET_SUPPORTED[key]} has not landed")
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise StropError(f"{source}: unknown key '{key}'{hint}")


def parse_override(item: str) -> tuple[str, Any]:
    """`key=value` from --set; the value is read as YAML so numbers, booleans and lists work."""
    if "=" not in item:
        raise StropError(f"--set {item!r}: expected key=value")
    key, value = item.split("=", 1)
    return key.strip(), yaml.safe_load(value) if value else None


def load_config(path: str | Path, overrides: list[str] | None = None) -> tuple[Config, Path]:
    """Read, override and validate a config; returns it with the folder relative paths resolve against."""
    path = Path(path)
    if not path.is_file():
        raise StropError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise StropError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise StropError(f"{path}: the top level must be a mapping of keys to values")
    for item in overrides or []:
        key, value = parse_override(item)
        raw[key] = value
    raw = axolotl_compatible(raw, str(path))
    _check_keys(raw, str(path))
    try:
        return config_class().model_validate(raw), path.resolve().parent
    except ValidationError as err:
        raise StropError(_format_validation_error(err, str(path))) from err


def axolotl_compatible(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """Axolotl's keys and dataset types as strop's (axolotl_keys.py); prints one line per ignored key."""
    from strop.objectives import known_dataset_types

    raw, notes = translate(raw, source, set(config_class().model_fields))
    raw = drop_blank_defaults(raw, config_class().model_fields)
    translate_datasets(raw, source, known_dataset_types())
    for note in notes:
        print(f"strop: {note}", file=sys.stderr)
    return raw


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False)


def _type_name(annotation: Any) -> str:
    return str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")


def schema_rows() -> list[tuple[str, str, str, str]]:
    rows = []
    owners = key_owners()
    for name, field in config_class().model_fields.items():
        default = "required" if field.is_required() else repr(field.default)
        owner = f"({owners[name]}) " if name in owners else ""
        rows.append((name, _type_name(field.annotation), default, owner + (field.description or "")))
    for name, field in DatasetSpec.model_fields.items():
        default = "required" if field.is_required() else repr(field.default)
        rows.append((f"datasets[].{name}", _type_name(field.annotation), default, field.description or ""))
    return rows
