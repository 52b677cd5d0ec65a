"""Checkpoints that survive a crash, in safetensors (never pickle) plus JSON.

A checkpoint is written into `checkpoint-N.tmp/` and renamed to `checkpoint-N/` only when every file is
on disk, so a folder named checkpoint-N is always complete; `--resume` takes the newest one. It holds
the trainable weights, the optimizer state (tensors in safetensors, structure in JSON), the scheduler,
the RNG states and the step, from which the data position follows.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from strop import manifest
from strop.errors import StropError
from strop.safe_io import disk_errors, remove_entry

_NAME = re.compile(r"^checkpoint-(\d+)$")
_UNFINISHED = re.compile(r"^checkpoint-\d+\.tmp$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _flat(prefix: str, value: Any, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
    """One optimizer-state value under `prefix`: tensors to safetensors, the rest to JSON. Nested dicts
    (bitsandbytes' 8-bit quantization state) flatten to `prefix/key`; a tensor subclass (torchao's
    low-bit states) is stored as its inner tensors plus how to rebuild it (`__tensor_flatten__`)."""
    if isinstance(value, dict):
        scalars[f"{prefix}/"] = "dict"
        for key, item in value.items():
            _flat(f"{prefix}/{key}", item, tensors, scalars)
    elif torch.is_tensor(value) and type(value) is not torch.Tensor and hasattr(value, "__tensor_flatten__"):
        names, ctx = value.__tensor_flatten__()
        cls = type(value)
        scalars[f"{prefix}@"] = {
            "class": f"{cls.__module__}:{cls.__qualname__}",
            "names": list(names),
            "ctx": ctx,
            "size": list(value.size()),
            "stride": list(value.stride()),
        }
        for name in names:
            tensors[f"{prefix}@{name}"] = getattr(value, name).detach().contiguous().cpu()
    elif torch.is_tensor(value):
        tensors[prefix] = value.detach().contiguous().cpu()
    else:
        scalars[prefix] = value


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            _flat(f"{index}.{key}", value, tensors, scalars)
    seen: set[int] = set()
    for key, value in tensors.items():  # safetensors refuses shared storage (bitsandbytes' shared qmaps)
        pointer = value.untyped_storage().data_ptr()
        if pointer in seen:
            tensors[key] = value.clone()
        seen.add(pointer)
    return tensors, _jsonable({"param_groups": state["param_groups"], "scalars": scalars})


def _jsonable(value: Any) -> Any:
    """JSON for what low-bit optimizers keep beside tensors: dtypes and 0-d tensors (torchao's lr)."""
    if isinstance(value, torch.dtype):
        return {"__dtype__": str(value).removeprefix("torch.")}
    if torch.is_tensor(value) and value.ndim == 0:
        return {"__scalar__": value.item(), "dtype": str(value.dtype).removeprefix("torch.")}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _from_json(value: Any, tuples: bool = False) -> Any:
    if isinstance(value, dict) and "__dtype__" in value:
        return getattr(torch, value["__dtype__"])
    if isinstance(value, dict) and "__scalar__" in value:
        return torch.tensor(value["__scalar__"], dtype=getattr(torch, value["dtype"]))
    if isinstance(value, dict):
        return {k: _from_json(v, tuples) for k, v in value.items()}
    if isinstance(value, list):
        items = [_from_json(v, tuples) for v in value]
        return tuple(items) if tuples else items
    return value


def _tuples(value: Any) -> Any:
    return _from_json(value, tuples=True)


def _rebuild(flat: dict[str, Any]) -> dict[str, Any]:
    """The nested state of one parameter from its `key`, `key/inner` and `key@inner` entries (_flat)."""
    import importlib

    groups: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        cut = min((i for i in (key.find("/"), key.find("@")) if i >= 0), default=len(key))
        groups.setdefault(key[:cut], {})[key[cut:]] = value
    out: dict[str, Any] = {}
    for name, parts in groups.items():
        if "" in parts:
            out[name] = parts[""]
        elif "/" in parts:
            out[name] = _rebuild({k[1:]: v for k, v in parts.items() if k != "/"})
        else:
            spec = parts["@"]
            module, _, cls_name = spec["class"].partition(":")
            cls = getattr(importlib.import_module(module), cls_name)
            inner = {n: parts[f"@{n}"] for n in spec["names"]}
            out[name] = cls.__tensor_unflatten__(
                inner, _tuples(spec["ctx"]), tuple(spec["size"]), tuple(spec["stride"])
            )
    return out


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    meta = {"param_groups": _from_json(meta["param_groups"]), "scalars": meta["scalars"]}
    per_param: dict[int, dict[str, Any]] = {}
    for flat, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, key = flat.split(".", 1)
        per_param.setdefault(int(index), {})[key] = value
    return {"state": {i: _rebuild(flat) for i, flat in per_param.items()}, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = state
    version, internal, gauss = random.getstate()
    return tensors, {"python": [version, list(internal), gauss]}


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(
    output_dir: Path,
    step: int,
    trainable: dict[str, torch.Tensor],
    optimizer,
    scheduler,
    extra: dict[str, Any],
    keep: int | None,
    files: dict[str, str] | None = None,
) -> Path:
    """`files`: further JSON files of the run's own (name → text), e.g. RL's saved rollouts."""
    final, tmp = output_dir / f"checkpoint-{step}", output_dir / f"checkpoint-{step}.tmp"
    opt_tensors, opt_meta = _split_optimizer(optimizer.state_dict())
    weights = {k: v.detach().contiguous().cpu() for k, v in trainable.items()}
    needed = sum(t.numel() * t.element_size() for t in (*weights.values(), *opt_tensors.values()))
    with _writing(tmp, needed) as write:
        _start(tmp)
        write("trainable.safetensors", lambda path: save_file(weights, path))
        write("optimizer.safetensors", lambda path: save_file(opt_tensors, path))
        rng_tensors, rng_meta = rng_state()
        write("rng.safetensors", lambda path: save_file(rng_tensors, path))
        state = {
            "step": step,
            "optimizer": opt_meta,
            "scheduler": _jsonable(scheduler.state_dict()),
            "rng": rng_meta,
            **extra,
        }
        write("trainer_state.json", lambda path: path.write_text(json.dumps(state, indent=1)))
        _write_files(write, files)
    _commit(tmp, final, keep)
    return final


def _write_files(write: Callable[[str, Callable[[Path], Any]], None], files: dict[str, str] | None) -> None:
    for name, text in (files or {}).items():
        write(name, partial(Path.write_text, data=text))


def _start(tmp: Path) -> None:
    """Claim checkpoint folder `tmp` (and its final name) in the run's manifest, then create it anew:
    a leftover of a killed run is removed, a link at its name unlinked (never followed), and mkdir
    fails rather than reuse anything that appears meanwhile."""
    manifest.claim(tmp, tmp.with_suffix(""))
    if tmp.is_symlink() or tmp.is_file():
        tmp.unlink()
    elif tmp.is_dir():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)


def intact_note(output_dir: Path, exclude: Path | None = None) -> str:
    """What a failed save leaves to resume from, for its error message."""
    found = [p for p in list_checkpoints(output_dir) if p != exclude]
    return f"{found[-1].name} is intact: run again with --resume once this is fixed" if found else ""


@contextmanager
def _writing(tmp: Path, needed: int | None = None) -> Iterator[Callable[[str, Callable[[Path], Any]], None]]:
    """Fill checkpoint folder `tmp`, removed if anything fails. Yields `write(name, how)`, which runs
    `how(tmp / name)`: a full disk or a permission error is reported in one line that names that file,
    the space needed and free, and the previous checkpoint left intact."""
    intact = intact_note(tmp.parent, tmp.with_suffix(""))

    def write(name: str, how: Callable[[Path], Any]) -> None:
        with disk_errors(tmp / name, needed, intact):
            how(tmp / name)

    try:
        with disk_errors(tmp, needed, intact):
            yield write
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _commit(tmp: Path, final: Path, keep: int | None) -> None:
    """Make a fully written checkpoint visible under its final name, then drop the oldest ones."""
    _fsync_dir(tmp)
    if final.exists() or final.is_symlink():
        remove_entry(final)
    tmp.rename(final)
    _fsync_dir(final.parent)
    _rotate(final.parent, keep)


def remove_unfinished(output_dir: Path) -> None:
    """Delete the checkpoint-N.tmp/ folders a killed run left (never listed, so never resumed from);
    only those the run's manifest records as strop's."""
    own = set(manifest.read(output_dir) or ())
    for entry in output_dir.iterdir():
        if entry.name in own and _UNFINISHED.match(entry.name):
            remove_entry(entry)


def list_checkpoints(output_dir: Path) -> list[Path]:
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def _rotate(output_dir: Path, keep: int | None) -> None:
    if keep:
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(path: Path, trainable: dict[str, torch.nn.Parameter], optimizer, scheduler) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG in place; returns the trainer state."""
    state = json.loads((path / "trainer_state.json").read_text())
    weights = load_file(path / "trainable.safetensors")
    missing = set(trainable) - set(weights)
    if missing:
        raise StropError(
            f"{path} was written by another run (a different model or strategy: it lacks "
            f"{sorted(missing)[:3]}); --resume needs this run's output_dir, or drop --resume "
            "and pass --overwrite to replace that run"
        )
    with torch.no_grad():
        for name, param in trainable.items():
            param.copy_(weights[name])
    optimizer.load_state_dict(_join_optimizer(load_file(path / "optimizer.safetensors"), state["optimizer"]))
    scheduler.load_state_dict(_from_json(state["scheduler"]))
    restore_rng(load_file(path / "rng.safetensors"), state["rng"])
    return state


# --- sharded checkpoints (several processes) ----------------------------------------------------------
#
# Under torchrun every rank writes its own shard with torch.distributed.checkpoint (DCP) into
# checkpoint-N.tmp/; after a barrier rank 0 adds trainer_state.json and renames the folder, so the
# checkpoint-N/ rule above holds. Tensors are keyed by parameter name (get_state_dict), not by layout,
# so DCP reshards on load: a checkpoint written by N processes resumes on M, or on one process.


def is_sharded(path: Path) -> bool:
    return (path / ".metadata").is_file()


def _dist():
    from strop.runtime import distributed

    return distributed


def _state_options(**kwargs):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(strict=False, **kwargs)


def _sharded_state(model, optimizer, trainable: Collection[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sharded weights of `trainable` (every parameter the strategy may train: LISA's layers frozen
    for the moment too, which `ignore_frozen_params` would drop) and persistent buffers, and the
    optimizer state; by name. DTensor views, nothing gathered."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    return {k: v for k, v in model_state.items() if k in trainable or k not in params}, optim_state


def save_sharded_checkpoint(
    output_dir: Path,
    step: int,
    model,
    trainable: Collection[str],
    optimizer,
    scheduler,
    extra: dict[str, Any],
    keep: int | None,
    files: dict[str, str] | None = None,
) -> Path:
    """Every rank must call this. Trainable weights and optimizer state as DCP shards, plus the
    scheduler, step and each rank's RNG; committed by rank 0's rename once all ranks are done. Rank 0
    writes `files` (name → text)."""
    import torch.distributed.checkpoint as dcp

    dist = _dist()
    final = output_dir / f"checkpoint-{step}"
    tmp = output_dir / f"checkpoint-{step}.tmp"
    with _writing(tmp) as write:
        if dist.is_main():
            _start(tmp)
        dist.barrier()
        model_state, optim_state = _sharded_state(model, optimizer, trainable)
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(tmp))
        rng_tensors, rng_meta = rng_state()
        write(f"rng-{dist.rank()}.safetensors", lambda path: save_file(rng_tensors, path))
        write(f"rng-{dist.rank()}.json", lambda path: path.write_text(json.dumps(rng_meta)))
        dist.barrier()
        if dist.is_main():
            state = {
                "step": step,
                "scheduler": _jsonable(scheduler.state_dict()),
                "world_size": dist.world_size(),
                **extra,
            }
            write("trainer_state.json", lambda path: path.write_text(json.dumps(state, indent=1)))
            _write_files(write, files)
    if dist.is_main():
        _commit(tmp, final, keep)
    dist.barrier()
    return final


def _params_with_optimizer_state(path: Path) -> set[str]:
    """Names of the parameters whose optimizer state a sharded checkpoint holds ("optim.state.NAME.KEY")."""
    import torch.distributed.checkpoint as dcp

    keys = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    prefix = "optim.state."
    return {key[len(prefix) :].rsplit(".", 1)[0] for key in keys if key.startswith(prefix)}


@contextmanager
def _requiring_grad(model, trainable: Collection[str], names: set[str]) -> Iterator[None]:
    """Within: of the trainable parameters, exactly `names` require grad. torch's get_state_dict builds
    a fresh optimizer's state (the template DCP loads into) for the parameters that require grad now,
    which under LISA are not those that had state when the checkpoint was written."""
    params = [(name, p) for name, p in model.named_parameters() if name in trainable]
    before = [p.requires_grad for _, p in params]
    for name, param in params:
        param.requires_grad_(name in names)
    try:
        yield
    finally:
        for (_, param), flag in zip(params, before):
            param.requires_grad_(flag)


def _load_sharded(path: Path, model, trainable: Collection[str], optimizer) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    with _requiring_grad(model, trainable, _params_with_optimizer_state(path)):
        model_state, optim_state = _sharded_state(model, optimizer, trainable)
        dcp.load({"model": model_state, "optim": optim_state}, checkpoint_id=str(path))
        set_state_dict(
            model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state, options=_state_options()
        )


def _load_single_into_sharded(path: Path, state: dict[str, Any], model, optimizer) -> None:
    """A one-process checkpoint (safetensors, optimizer keyed by index) into a sharded model."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    weights = load_file(path / "trainable.safetensors")
    indexed = _join_optimizer(load_file(path / "optimizer.safetensors"), state["optimizer"])
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    optim_state = {
        "state": {order[i]: v for i, v in indexed["state"].items()},
        "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in indexed["param_groups"]],
    }
    set_state_dict(
        model,
        optimizer,
        model_state_dict=weights,  # type: ignore[arg-type]
        optim_state_dict=optim_state,  # type: ignore[arg-type]
        options=_state_options(full_state_dict=True),
    )


def resume(path: Path, model, trainable: dict[str, torch.nn.Parameter], optimizer, scheduler) -> dict[str, Any]:
    """Restore any checkpoint, one-process or sharded, into this run, whatever its number of processes."""
    dist = _dist()
    if not is_sharded(path) and not dist.active():
        return load_checkpoint(path, trainable, optimizer, scheduler)
    state = json.loads((path / "trainer_state.json").read_text())
    if is_sharded(path):
        _load_sharded(path, model, trainable, optimizer)
    else:
        _load_single_into_sharded(path, state, model, optimizer)
    scheduler.load_state_dict(_from_json(state["scheduler"]))
    rank_rng = path / f"rng-{dist.rank()}.safetensors"
    if rank_rng.is_file():
        restore_rng(load_file(rank_rng), json.loads(rank_rng.with_suffix(".json").read_text()))
    elif (path / "rng.safetensors").is_file() and dist.rank() == 0:
        restore_rng(load_file(path / "rng.safetensors"), state["rng"])
    else:  # more ranks than wrote the checkpoint: a fresh stream, still a function of (step, rank)
        torch.manual_seed(hash((state["step"], dist.rank())) % (2**31))
    return state


def gather_full_state(model, trainable_only: bool) -> dict[str, torch.Tensor]:
    """Every rank must call this; rank 0 receives the whole (unsharded, CPU) state dict, others {}."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=trainable_only)
    return get_model_state_dict(model, options=options)  # type: ignore[return-value]
