"""Axolotl's config keys that are not strop's own: what strop does with each, in one place.

strop's keys follow Axolotl's so that configs people already have run unchanged. Axolotl's schema also
has keys that tune its internals (a prepared-dataset cache, plugin classes, Liger switches), keys of
features strop reaches another way, and keys whose meaning strop implements under its own name. Every
such key is listed here with the reason, so that the policy is one table (the README's compatibility
table is generated from it by `strop config --axolotl-keys`) and never a silent drop:

- IGNORED: accepted whatever the value; `load_config` prints one "ignored: KEY (why)" line for each;
- ONLY_WHEN_OFF: a feature strop does not have: false / null / empty is accepted (configs carry the key
  switched off), a real value is refused with the reason;
- RENAMED: the same meaning under strop's name; the value moves there;
- AxolotlParams: keys strop implements (fields flat in the config, like every other key);
- the `trl:` block of GRPO configs maps onto strop's RL keys (TRL_KEYS / TRL_IGNORED).

A key in none of these stays an error naming the closest valid key (config._check_keys).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from strop.errors import StropError

_ATTN = "strop picks the attention kernel itself (SDPA, or its packed FlexAttention for sample_packing)"
_LIGER = "strop's own Triton kernels (kernels: true) fuse RMSNorm, SwiGLU, RoPE and the cross-entropy"
_VLLM = "strop samples GRPO rollouts in-process with the policy being trained (rl/rollout.py): no vLLM server"

IGNORED: dict[str, str] = {
    "attn_implementation": "strop loads models with SDPA and runs packed rows with its FlexAttention kernel; "
    "flash_attention_2 / flex / eager map to that",
    "pad_to_sequence_len": "strop pads each batch to its longest row (packed rows are sequence_len already); "
    "its kernels gain nothing from fixed shapes",
    "tf32": "strop leaves PyTorch's float32 matmul precision as the device sets it; no effect on CPU",
    "dataset_prepared_path": "strop tokenizes in memory at the start of each run; there is no prepared-dataset cache",
    "push_dataset_to_hub": "there is no prepared dataset to push",
    "dataset_processes": "tokenization runs in-process",
    "dataset_num_proc": "tokenization runs in-process",
    "dataset_keep_in_memory": "datasets are always in memory",
    "strict": "strop validates every key of every config; there is no lenient mode to switch",
    "plugins": "Axolotl integration classes; " + _LIGER,
    "cut_cross_entropy": _LIGER,
    "lora_mlp_kernel": "strop's fused LoRA kernels are switched by `kernels:`",
    "lora_qkv_kernel": "strop's fused LoRA kernels are switched by `kernels:`",
    "lora_o_kernel": "strop's fused LoRA kernels are switched by `kernels:`",
    "fused_attn_kernel": _ATTN,
    "flash_attention": _ATTN,
    "sdp_attention": _ATTN,
    "xformers_attention": _ATTN,
    "flex_attention": _ATTN,
    "s2_attention": _ATTN,
    "flash_attn_cross_entropy": _LIGER,
    "flash_attn_rms_norm": _LIGER,
    "flash_attn_fuse_mlp": _LIGER,
    "torch_compile": "strop's kernels are hand-written Triton; it does not torch.compile the model",
    "torch_compile_backend": "strop does not torch.compile the model",
    "torch_compile_mode": "strop does not torch.compile the model",
    "eval_sample_packing": "validation rows are packed exactly when training rows are (sample_packing)",
    "sample_packing_eff_est": "strop packs greedily and reports the packing efficiency it measured",
    "total_num_tokens": "strop counts tokens itself",
    "remove_unused_columns": "strop keeps only the fields each row type reads",
    "skip_prepare_dataset": "strop has no separate preparation step to skip",
    "group_by_length": "batches follow the seeded permutation that makes resume exact; no length grouping",
    "tokenizer_type": "the tokenizer class comes from the model folder (AutoTokenizer)",
    "tokenizer_use_fast": "strop always loads the fast tokenizer",
    "tokenizer_legacy": "strop always loads the fast tokenizer",
    "is_llama_derived_model": "the architecture is read from the model's config",
    "is_mistral_derived_model": "the architecture is read from the model's config",
    "is_qwen_derived_model": "the architecture is read from the model's config",
    "is_falcon_derived_model": "the architecture is read from the model's config",
    "save_safetensors": "strop always writes safetensors",
    "debug": "strop prints its plan and data notes before every run",
    "eval_table_size": "strop prints sample answers through sample_prompts",
    "eval_max_new_tokens": "strop prints sample answers through sample_prompts (sample_max_new_tokens)",
    "include_tokens_per_second": "strop always logs tokens_per_s",
    "vllm": _VLLM,
    "ddp_timeout": "strop's torchrun launch uses PyTorch's default timeouts",
    "ddp_find_unused_parameters": "strop uses FSDP2, not DDP",
    "ddp_bucket_cap_mb": "strop uses FSDP2, not DDP",
    "ddp_broadcast_buffers": "strop uses FSDP2, not DDP",
    "low_cpu_mem_usage": "transformers loads weights lazily already",
    "wandb_watch": "gradient histograms are not logged; metrics go to W&B when wandb_project is set",
    "wandb_log_model": "the artifact stays in output_dir; upload it yourself if you want it in W&B",
    "eot_tokens": "strop trains each assistant turn through the end-of-turn text its chat template renders "
    "(Axolotl's train_on_eos: turn), whatever tokens that is",
    "do_causal_lm_eval": "strop's evaluation logs eval_loss (perplexity is its exp); generation metrics "
    "(BLEU, chrF, COMET) are `strop eval`'s evaluators",
    "eval_causal_lm_metrics": "strop's evaluation logs eval_loss (perplexity is its exp); generation metrics "
    "(BLEU, chrF, COMET) are `strop eval`'s evaluators",
}

#: Prefixes of key families that only tune Axolotl internals.
IGNORED_PREFIXES: dict[str, str] = {
    "liger_": _LIGER,
    "dataloader_": "strop's data is tokenized in memory and batched in-process; no DataLoader workers",
}

ONLY_WHEN_OFF: dict[str, str] = {
    "deepspeed": "strop shards with FSDP2 (`fsdp:` and `strop train --nproc N`), not DeepSpeed",
    "fsdp_config": "strop's FSDP2 is configured with `fsdp: {sharding, cpu_offload, activation_checkpointing}`",
    "fsdp_version": "strop's FSDP2 is configured with `fsdp: {sharding, cpu_offload, activation_checkpointing}`",
    "activation_offloading": "use kernel_checkpoint: offload (strop's offloaded activation checkpointing)",
    "unfrozen_parameters": "use adapter: spectrum (strop's layer selection) or full fine-tuning",
    "relora": "ReLoRA restarts are not implemented",
    "lora_on_cpu": "strop places the whole model on one device",
    "gptq": "GPTQ bases are not supported; use load_in_4bit (NF4)",
    "qat": "quantization-aware training is not implemented",
    "hf_mlflow_log_artifacts": "the artifact stays in output_dir; MLflow gets the metrics",
    "dataset_shard_num": "use a smaller local file",
    "sequence_parallel_degree": "sequence parallelism is not implemented",
    "context_parallel_size": "context parallelism is not implemented",
    "tensor_parallel_size": "tensor parallelism is not implemented",
}

RENAMED: dict[str, str] = {
    "beta": "rl_beta",
    # Axolotl's "no AMP" switches: strop trains under autocast and keeps float32 masters of what it trains
    # (the frozen base of an adapter is stored in bf16 on the GPU either way)
    "bfloat16": "bf16",
    "float16": "fp16",
    "noisy_embedding_alpha": "neftune_noise_alpha",
}

#: Axolotl's `trl:` block of GRPO configs → strop's key (None: the same name).
TRL_KEYS: dict[str, str | None] = {
    "beta": "kl_beta",
    "num_generations": None,
    "max_completion_length": None,
    "temperature": None,
    "top_p": None,
    "top_k": None,
    "num_iterations": None,
    "epsilon": "epsilon_low",
    "epsilon_high": None,
    "loss_type": None,
    "scale_rewards": None,
    "mask_truncated_completions": None,
    "generation_batch_size": None,
}
TRL_IGNORED: dict[str, str] = {
    key: _VLLM
    for key in (
        "use_vllm",
        "vllm_mode",
        "vllm_server_host",
        "vllm_server_port",
        "vllm_server_timeout",
        "vllm_lora_sync",
        "vllm_gpu_memory_utilization",
        "vllm_tensor_parallel_size",
        "use_data_producer",
        "async_prefetch",
        "vllm_enable_sleep_mode",
    )
} | {
    "log_completions": "strop prints sampled completions every log_completions_steps",
    "sync_ref_model": "the reference stays the starting policy",
}

#: Axolotl's `model_type` can name a loader class rather than an architecture.
LOADER_CLASSES = {"AutoModelForCausalLM", "AutoModelForSequenceClassification", "AutoModel"}


class AxolotlParams(BaseModel):
    """Axolotl keys strop implements (flat in the config, descriptions double as `strop config --schema`)."""

    special_tokens: dict[str, str] | None = Field(
        None,
        description="Tokenizer special tokens to set, e.g. {pad_token: ...}; "
        "a token new to the vocabulary resizes the embeddings.",
    )
    tokens: list[str] | None = Field(None, description="Extra tokens added to the vocabulary (embeddings resized).")
    resume_from_checkpoint: str | None = Field(
        None, description="Checkpoint folder to continue from (as strop train --resume)."
    )
    lora_model_dir: str | None = Field(
        None, description="An existing PEFT adapter folder to continue training (LoRA family)."
    )
    lora_modules_to_save: list[str] | None = Field(
        None, description="Modules trained and saved whole beside the LoRA adapter (e.g. embed_tokens, lm_head)."
    )
    saves_per_epoch: int | None = Field(
        None, gt=0, description="Checkpoints per epoch (sets save_steps when it is unset)."
    )
    evals_per_epoch: int | None = Field(
        None, gt=0, description="Evaluations per epoch (sets eval_steps when it is unset)."
    )
    eval_batch_size: int | None = Field(
        None, gt=0, description="Rows per forward pass when evaluating (default micro_batch_size)."
    )
    data_seed: int | None = Field(None, description="Seed of the data order and validation split (default: seed).")
    gradient_checkpointing_kwargs: dict[str, Any] | None = Field(
        None, description="Passed to transformers' gradient_checkpointing_enable (use_reentrant: false is the default)."
    )
    early_stopping_patience: int | None = Field(
        None, gt=0, description="Stop when eval loss has not improved for this many evaluations."
    )
    loss_watchdog_threshold: float | None = Field(
        None, gt=0, description="Stop the run when the loss stays above this..."
    )
    loss_watchdog_patience: int | None = Field(
        None, gt=0, description="...for this many consecutive steps (default 3)."
    )
    lr_scheduler_kwargs: dict[str, Any] | None = Field(
        None, description="Options of lr_scheduler (warmup_stable_decay: num_decay_steps or decay_ratio, min_lr_ratio)."
    )
    load_in_8bit: bool = Field(
        False, description="Store the frozen base in 8-bit (bitsandbytes LLM.int8) under an adapter."
    )
    num_labels: Literal[1] | None = Field(
        None, description="Reward model outputs (one scalar: the Bradley-Terry score)."
    )
    resize_token_embeddings_to_32x: bool = Field(
        False, description="When new tokens grow the embeddings, round their rows up to a multiple of 32."
    )
    dataset_exact_deduplication: bool = Field(
        False, description="Drop rows identical to an earlier row (across all datasets)."
    )
    wandb_project: str | None = Field(
        None, description="Log metrics to this Weights & Biases project (needs wandb installed)."
    )
    wandb_entity: str | None = Field(None, description="W&B team or user.")
    wandb_name: str | None = Field(None, description="W&B run name (default: output_dir's name).")
    wandb_run_id: str | None = Field(None, description="W&B run id (to continue a run).")
    wandb_mode: str | None = Field(
        None, description="W&B mode: online, offline or disabled (WANDB_MODE is respected too)."
    )
    mlflow_tracking_uri: str | None = Field(
        None, description="Log metrics to MLflow at this URI (needs mlflow installed)."
    )
    mlflow_experiment_name: str | None = Field(None, description="MLflow experiment (default: MLflow's own).")
    mlflow_run_name: str | None = Field(None, description="MLflow run name (default: output_dir's name).")
    hub_model_id: str | None = Field(
        None,
        description="Push the finished run to this Hugging Face Hub repository (name or namespace/name; "
        "token from HF_TOKEN or `hf auth login`, checked before training).",
    )
    push_to_hub: bool | None = Field(
        None, description="false: do not push even with hub_model_id set (setting hub_model_id alone pushes)."
    )
    hub_strategy: Literal["end", "every_save", "checkpoint", "all_checkpoints"] | None = Field(
        None,
        description="Checkpoints pushed with the final artifact: end (none), checkpoint (the newest, as "
        "last-checkpoint/), all_checkpoints; strop pushes once, after training (every_save = end).",
    )
    hub_revision: str | None = Field(None, description="Branch to push to (created if new; default main).")


def _is_off(value: Any) -> bool:
    return value is None or value is False or value == [] or value == {} or value == ""


def _translate_trl(trl: dict[str, Any], source: str, out: dict[str, Any], notes: list[str]) -> None:
    """GRPO's `trl:` block: its keys become strop's RL keys; reward_funcs + reward_weights become
    `rewards:` entries of type `trl_function` (TRL's calling convention)."""
    funcs = trl.pop("reward_funcs", None) or []
    weights = trl.pop("reward_weights", None) or [1.0] * len(funcs)
    if len(weights) != len(funcs):
        raise StropError(f"{source}: trl.reward_weights has {len(weights)} entries for {len(funcs)} reward_funcs")
    if funcs:
        out.setdefault("rewards", [])
        out["rewards"] += [{"type": "trl_function", "function": f, "weight": w} for f, w in zip(funcs, weights)]
    for key, value in trl.items():
        if key in TRL_KEYS:
            if value is not None:
                out[TRL_KEYS[key] or key] = value
        elif key in TRL_IGNORED:
            notes.append(f"ignored: trl.{key} ({TRL_IGNORED[key]})")
        else:
            known = ", ".join(sorted([*TRL_KEYS, *TRL_IGNORED, "reward_funcs", "reward_weights"]))
            raise StropError(f"{source}: trl.{key} is not a key strop knows (known: {known})")


_PRETRAINING_KEYS = {"path", "name", "split", "data_files", "ds_type", "type", "text_column", "trust_remote_code"}


def _pretraining_entries(value: Any, source: str) -> list[dict[str, Any]]:
    """Axolotl's streamed `pretraining_dataset` entries as `datasets:` entries of raw text."""
    entries = value if isinstance(value, list) else [value]
    out = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or "path" not in entry:
            raise StropError(f"{source}: pretraining_dataset[{index}] must be a mapping with a 'path'")
        unknown = sorted(set(entry) - _PRETRAINING_KEYS)
        if unknown:
            raise StropError(
                f"{source}: pretraining_dataset[{index}]: unknown key(s) {unknown} "
                f"(known: {', '.join(sorted(_PRETRAINING_KEYS))})"
            )
        if entry.get("type", "pretrain") != "pretrain":
            raise StropError(
                f"{source}: pretraining_dataset[{index}].type: {entry['type']!r} is not supported "
                "(pretrain: raw text; put other types under datasets:)"
            )
        keep = {k: entry[k] for k in ("path", "name", "split", "data_files", "ds_type") if entry.get(k) is not None}
        out.append({**keep, "type": "completion", "field": entry.get("text_column") or "text"})
    return out


def ignored_reason(key: str) -> str | None:
    if key in IGNORED:
        return IGNORED[key]
    return next((why for prefix, why in IGNORED_PREFIXES.items() if key.startswith(prefix)), None)


def translate(raw: dict[str, Any], source: str, own_keys: set[str]) -> tuple[dict[str, Any], list[str]]:
    """An Axolotl config as strop's keys, and one "ignored: KEY (why)" line per key strop does not use.
    `own_keys` are strop's valid keys: a key strop has itself is never translated."""
    out: dict[str, Any] = {}
    notes: list[str] = []
    for key, value in raw.items():
        if key == "gradient_checkpointing" and value == "offload":
            out["gradient_checkpointing"] = True
            out.setdefault("kernel_checkpoint", "offload")
        elif key in own_keys and key not in ("model_type",):
            out[key] = value
        elif key == "model_type" and value in LOADER_CLASSES:
            notes.append(
                f"ignored: model_type {value} (a loader class, not an architecture; the objective picks the head)"
            )
        elif key == "model_type":
            out[key] = value
        elif key == "pretraining_dataset":
            out.setdefault("pretraining_dataset", []).extend(_pretraining_entries(value, source))
        elif key == "trl":
            _translate_trl(dict(value or {}), source, out, notes)
        elif key == "lora_target_linear":
            if value:
                out["lora_target_modules"] = "all-linear"  # a superset of any list given beside it, as in Axolotl
        elif key in RENAMED:
            out.setdefault(RENAMED[key], value)
        elif (why := ignored_reason(key)) is not None:
            if not _is_off(value):
                notes.append(f"ignored: {key} ({why})")
        elif key in ONLY_WHEN_OFF:
            if not _is_off(value):
                raise StropError(
                    f"{source}: {key}: {value!r} is not supported: {ONLY_WHEN_OFF[key]} (false or null is accepted)"
                )
        else:
            out[key] = value
    if out.get("pretraining_dataset"):
        out["datasets"] = [*(out.get("datasets") or []), *out.pop("pretraining_dataset")]
        notes.append(
            "axolotl: pretraining_dataset is read as plain-text rows (type completion with its text_column), "
            "the whole file at once: strop does not stream"
        )
    if raw.get("lora_target_linear") and "lora_target_modules" in raw:
        out["lora_target_modules"] = "all-linear"
    if raw.get("trl") and "max_completion_length" in out:
        # Axolotl's GRPO bounds the prompt by sequence_len; strop's sequence_len is prompt + completion.
        out["sequence_len"] = raw.get("sequence_len", 2048) + out["max_completion_length"]
        notes.append(
            f"axolotl: sequence_len {raw.get('sequence_len', 2048)} bounds the GRPO prompt; with "
            f"max_completion_length it is sequence_len {out['sequence_len']} in strop's terms"
        )
    return out, notes


def drop_blank_defaults(raw: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """Axolotl configs leave a key empty (null) to mean its default: drop such a key when its field
    does not take null itself (max_grad_norm: null keeps its meaning, clipping off)."""
    import types
    import typing

    def takes_none(annotation: Any) -> bool:
        return (
            annotation is None
            or type(None) in typing.get_args(annotation)
            or (isinstance(annotation, types.UnionType) and type(None) in annotation.__args__)
        )

    return {k: v for k, v in raw.items() if not (v is None and k in fields and not takes_none(fields[k].annotation))}


def compat_rows() -> list[tuple[str, str, str]]:
    """(Axolotl key, what strop does, why/where): the README's compatibility table."""
    rows = [(name, "used", field.description or "") for name, field in AxolotlParams.model_fields.items()]
    rows.append(("lora_target_linear", "used", "true sets lora_target_modules: all-linear"))
    rows.append(("pretraining_dataset", "used", "read whole (no streaming) as completion rows of its text_column"))
    rows.append(("trl", "used", "GRPO keys map to strop's RL keys; reward_funcs become trl_function rewards"))
    rows += [(key, "used", f"same as {target}") for key, target in RENAMED.items()]
    rows += [(key, "accepted, not used", why) for key, why in IGNORED.items()]
    rows += [(f"{prefix}*", "accepted, not used", why) for prefix, why in IGNORED_PREFIXES.items()]
    rows += [(key, "refused unless off", why) for key, why in ONLY_WHEN_OFF.items()]
    return rows
