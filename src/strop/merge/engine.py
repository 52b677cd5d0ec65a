"""Run a merge: check the models agree, stream every tensor through the method, publish atomically.

The output is assembled in a hidden temporary folder next to the destination and renamed into
place only when complete, so an interrupted merge never leaves a folder that looks like a model.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from strop import manifest
from strop.errors import StropError
from strop.merge.checkpoint import Checkpoint, PlannedTensor, ShardWriter
from strop.merge.config import MergeConfig, load_config, resolve_params
from strop.merge.methods import MergeInputs, MergeMethod, get_method
from strop.safe_io import disk_errors, temp_folder

DEFAULT_MAX_SHARD_BYTES = 2 * 1024**3
OUT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
MAX_LISTED = 10


@dataclass
class MergePlan:
    """The resolved config: which checkpoints play which role."""

    config: MergeConfig
    method: MergeMethod
    base: Checkpoint | None
    merged: list[Checkpoint]
    merged_params: list[dict]

    @property
    def all(self) -> list[Checkpoint]:
        return ([self.base] if self.base else []) + [c for c in self.merged if c is not self.base]


def resolve_model_path(spec: str, config_dir: Path) -> Path:
    """A model path as written: relative to the working directory, else to the config file."""
    path = Path(spec).expanduser()
    if path.is_absolute() or path.exists():
        return path
    beside_config = config_dir / path
    if beside_config.exists():
        return beside_config
    raise StropError(
        f"model folder not found: {spec!r} (looked in {Path.cwd()} and {config_dir}); "
        "strop merge needs local HF model folders, so download hub models first"
    )


def build_plan(config: MergeConfig, config_dir: Path) -> MergePlan:
    """Open every checkpoint once and sort them into base and merged models by the method's rules."""
    method = get_method(config.merge_method)
    cache: dict[Path, Checkpoint] = {}

    def open_checkpoint(spec: str) -> Checkpoint:
        path = resolve_model_path(spec, config_dir).resolve()
        if path not in cache:
            cache[path] = Checkpoint(path)
        return cache[path]

    base = open_checkpoint(config.base_model) if config.base_model else None
    entries = [(open_checkpoint(e.model), e.parameters) for e in config.models]
    if method.base_role == "task":
        if base is None:
            raise StropError(f"merge_method {method.name} needs `base_model:` (task vectors are θ − θ_base)")
        entries = [(c, p) for c, p in entries if c is not base]
    elif method.base_role == "endpoint" and base is not None:
        entries = [(base, {})] + [(c, p) for c, p in entries if c is not base]
    count = len(entries)
    if count < method.min_models or (method.max_models is not None and count > method.max_models):
        wanted = method.min_models if method.max_models == method.min_models else f"at least {method.min_models}"
        role = " besides the base model" if method.base_role == "task" else ""
        raise StropError(f"merge_method {method.name} merges {wanted} model(s){role}, got {count}")
    return MergePlan(config, method, base, [c for c, _ in entries], [p for _, p in entries])


def check_compatible(checkpoints: list[Checkpoint]) -> None:
    """Same architecture, same tensor names and shapes, same tokenizer, or a clear list of what differs."""
    reference = checkpoints[0]
    for other in checkpoints[1:]:
        for key in ("model_type", "architectures"):
            if reference.config.get(key) != other.config.get(key):
                raise StropError(
                    f"models differ in {key}: {reference.path} has {reference.config.get(key)!r}, "
                    f"{other.path} has {other.config.get(key)!r}"
                )
        problems = _spec_differences(reference, other)
        if problems:
            shown = "\n  ".join(problems[:MAX_LISTED])
            more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
            raise StropError(
                f"{other.path} does not match {reference.path} ({len(problems)} differing tensors):\n  {shown}{more}"
            )
    _check_tokenizers(checkpoints)


def _check_tokenizers(checkpoints: list[Checkpoint]) -> None:
    """Merged weights only make sense over one vocabulary, so every tokenizer.json present must agree."""
    present = [c.path / "tokenizer.json" for c in checkpoints if (c.path / "tokenizer.json").is_file()]
    if len(present) < 2:
        return
    reference = json.loads(present[0].read_text())
    for path in present[1:]:
        if json.loads(path.read_text()) != reference:
            raise StropError(
                f"tokenizers differ: {path} is not the same as {present[0]}; merge models of one vocabulary"
            )


def _spec_differences(reference: Checkpoint, other: Checkpoint) -> list[str]:
    """Human-readable lines for every tensor that is missing, extra or differently shaped."""
    lines = []
    for name in sorted(set(reference.specs) | set(other.specs)):
        mine, theirs = reference.specs.get(name), other.specs.get(name)
        if theirs is None:
            lines.append(f"{name}: missing from {other.path}")
        elif mine is None:
            lines.append(f"{name}: only in {other.path}")
        elif mine.shape != theirs.shape:
            lines.append(f"{name}: shape {list(mine.shape)} vs {list(theirs.shape)}")
    return lines


def merge_tensor(plan: MergePlan, name: str) -> torch.Tensor:
    """Merge one tensor name across the models, in float32; non-float tensors must simply agree."""
    reference = plan.base or plan.merged[0]
    if not reference.specs[name].torch_dtype.is_floating_point:
        value = reference.read(name)
        for checkpoint in plan.all:
            if not torch.equal(checkpoint.read(name), value):
                raise StropError(f"non-float tensor {name} differs between models and cannot be merged")
        return value
    method, config = plan.method, plan.config
    model_params = [
        resolve_params(dict(method.model_params), config.parameters, own, tensor_name=name)
        for own in plan.merged_params
    ]
    inputs = MergeInputs(
        tensors=[c.read(name).float() for c in plan.merged],
        base=plan.base.read(name).float() if method.base_role == "task" and plan.base else None,
        model_params=model_params,
        params=resolve_params(dict(method.global_params), config.parameters, tensor_name=name),
        seed=config.seed,
        name=name,
    )
    return method.merge(inputs)


@contextmanager
def staging_folder(out_dir: Path, overwrite: bool, needed: int | None = None) -> Iterator[Path]:
    """A private temporary sibling of out_dir that replaces it only if the body finishes; out_dir may
    be replaced (with --overwrite) only when strop wrote everything in it. A full disk is reported in
    one line with the space the merge needs."""
    existed = out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir()))
    if existed:
        if out_dir.is_dir() and not overwrite:
            raise StropError(
                f"output folder {out_dir} already exists and is not empty; remove it or pick another --out"
            )
        manifest.check_replaceable(out_dir, "output folder")
    intact = f"{out_dir} is unchanged" if existed else ""
    with disk_errors(out_dir, needed, intact), temp_folder(out_dir) as staging:
        yield staging
        manifest.place_folder(staging, out_dir, "output folder")


def copy_side_files(plan: MergePlan, staging: Path, out_dtype: torch.dtype | None) -> None:
    """config.json (dtype updated), generation config and tokenizer from the base or first model."""
    source = plan.base or plan.merged[0]
    config = dict(source.config)
    if out_dtype is not None:
        dtype_name = str(out_dtype).removeprefix("torch.")
        for key in ("dtype", "torch_dtype"):
            if key in config:
                config[key] = dtype_name
        if "dtype" not in config and "torch_dtype" not in config:
            config["dtype"] = dtype_name
    (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer_source = next((c for c in plan.all if any((c.path / f).is_file() for f in TOKENIZER_FILES)), source)
    for folder, files in ((source.path, ("generation_config.json",)), (tokenizer_source.path, TOKENIZER_FILES)):
        for file in files:
            if (folder / file).is_file():
                shutil.copy2(folder / file, staging / file)


def return_freed_memory_promptly() -> None:
    """Make glibc hand freed blocks of 1 MiB and more straight back to the OS.

    By default glibc raises its mmap threshold after the first large free, after which the 28 MB
    boolean temporaries of an embedding-sized tensor land on the heap, fragment it, and are never
    returned: measured on a SmolLM2-shaped TIES merge that added ~170 MB to the peak. Setting the
    threshold explicitly turns that adaptation off. No-op off glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]merging[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        disable=not enabled,
    )


def run_merge(
    config_path: str | Path,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> Path:
    """Merge the models described by MERGE.yml into out_dir (an HF model folder); returns out_dir.

    Tensors are streamed one name at a time, so memory stays at a few tensors whatever the model size.
    """
    config_path = Path(config_path)
    config = load_config(config_path)
    return_freed_memory_promptly()
    plan = build_plan(config, config_path.parent)
    check_compatible(plan.all)
    out_dtype = OUT_DTYPES[config.dtype] if config.dtype else None
    reference = plan.base or plan.merged[0]
    planned = []
    for name, spec in reference.specs.items():
        dtype = out_dtype if out_dtype is not None and spec.torch_dtype.is_floating_point else spec.torch_dtype
        planned.append(PlannedTensor(name, dtype, spec.shape))
    if not planned:
        raise StropError(f"{reference.path} holds no tensors")
    out = Path(out_dir)
    needed = sum(t.nbytes for t in planned)
    with staging_folder(out, overwrite, needed) as staging, _progress(progress) as bar:
        writer = ShardWriter(staging, planned, max_shard_bytes)
        task = bar.add_task("", total=len(planned))
        try:
            for tensor in planned:
                bar.update(task, description=tensor.name)
                merged = merge_tensor(plan, tensor.name)
                writer.write(tensor.name, merged.to(tensor.dtype))
                del merged
                bar.advance(task)
        finally:
            writer.close()
        writer.finish()
        copy_side_files(plan, staging, out_dtype)
    return out
