"""The training output folder: what a run may start in, what `--overwrite` removes, and the append-only
logs a resumed run cuts back to its checkpoint.

A run starts only in a new or empty folder, or in one strop wrote before (its manifest, see
strop/manifest.py): then `--resume` continues it and `--overwrite` removes what strop wrote there and
nothing else. A folder holding anything strop did not write (the config, the data, notes) is refused
with or without `--overwrite`, and so is one that holds this run's own inputs.

Logs (metrics.jsonl, an RL run's completions.jsonl) are appended to line by line, so a crash or a full
disk can leave a torn last line, and a resumed run redoes the steps after its checkpoint. Before the
first step each log is cut back to the records the checkpoint covers; unreadable lines are dropped
with a note instead of stopping the resume.
"""

from __future__ import annotations

import json
from pathlib import Path

from strop import manifest
from strop.config import Config
from strop.errors import StropError
from strop.runtime import distributed
from strop.safe_io import disk_errors, staged_file
from strop.train import checkpoint as ckpt

#: What the loop itself writes into output_dir besides the final artifact and the checkpoints.
LOOP_FILES = ("metrics.jsonl", "loss.png", "tensorboard")
#: Append-only logs, each with the offset from the resumed step of the first step its records redo:
#: metrics are logged after step s as s + 1; RL rollouts are logged as the step that samples them.
APPEND_LOGS = {"metrics.jsonl": 1, "completions.jsonl": 0}


def input_paths(cfg: Config, base_dir: Path | None) -> list[tuple[str, Path]]:
    """The local files and folders this run reads: (what, path), for the overwrite check."""
    from strop.data.readers import resolve_data_path

    found = [("the config in", base_dir)] if base_dir is not None else []
    for dataset in getattr(cfg, "datasets", None) or []:
        path = resolve_data_path(str(dataset.path), base_dir)
        if path is not None:
            found.append(("the dataset", path))
    for key in ("base_model", "tokenizer_config", "distill_teacher"):
        value = getattr(cfg, key, None)
        if value and Path(str(value)).expanduser().exists():
            found.append((f"the {key}", Path(str(value)).expanduser()))
    return found


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def prepare_output(output_dir: Path, resume: bool, overwrite: bool, inputs: list[tuple[str, Path]]) -> Path | None:
    """The checkpoint to resume from, after refusing any folder whose files strop could clobber.
    Every process checks (so all refuse alike); only rank 0 deletes."""
    if output_dir.exists() and not output_dir.is_dir():
        raise StropError(f"output_dir {output_dir} is a file, not a folder: choose a folder path for output_dir")
    above = next((p for p in output_dir.absolute().parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise StropError(f"output_dir {output_dir} cannot be created: {above} is a file")
    checkpoints = ckpt.list_checkpoints(output_dir)
    if resume and checkpoints:
        return checkpoints[-1]
    if output_dir.exists() and any(output_dir.iterdir()):
        _refuse_foreign(output_dir, overwrite)
        if not resume:
            _replace_earlier_run(output_dir, overwrite, inputs)
    if resume:
        print(f"strop: no checkpoint in {output_dir}; starting from scratch")
    return None


def _refuse_foreign(output_dir: Path, overwrite: bool) -> None:
    """Whatever the flags, no run starts among files strop has no record of writing: its final save
    could replace them, and --overwrite could not tell them from its own."""
    others = manifest.foreign(output_dir)
    if others:
        how = "--overwrite removes only what strop wrote, so it" if overwrite else "strop"
        old = (
            f" (it has no {manifest.MANIFEST}: if it is a run of an older strop, delete it yourself)"
            if manifest.read(output_dir) is None
            else ""
        )
        raise StropError(
            f"output_dir {output_dir} holds files strop did not write ({manifest.describe(others)}){old}; "
            f"{how} will not train there: choose a new or empty folder with --output-dir"
        )


def _replace_earlier_run(output_dir: Path, overwrite: bool, inputs: list[tuple[str, Path]]) -> None:
    """An earlier run is replaced only on request, and never while it holds this run's own inputs
    (`strop train out/strop_config.yml --overwrite`, or data or a model kept in that folder)."""
    if not overwrite:
        raise StropError(
            f"output_dir {output_dir} holds an earlier run: use --resume to continue it, "
            "--overwrite to replace it, or another --output-dir"
        )
    for what, path in inputs:
        if _inside(path, output_dir):
            raise StropError(
                f"output_dir {output_dir} holds {what} {path}, which --overwrite would delete: "
                "move it out of the folder or choose another --output-dir"
            )
    distributed.barrier()  # every rank has looked before rank 0 deletes
    if distributed.is_main():
        manifest.remove_own(output_dir)


def start_output(output_dir: Path, names: list[str]) -> None:
    """Rank 0: create the folder if needed and claim the names this run writes, before writing any;
    remove the half-written checkpoints of a killed run. Every rank has checked the folder
    (`prepare_output`) before rank 0 writes to it: a rank still checking would see this run's manifest
    as an earlier run."""
    distributed.barrier()
    if distributed.is_main():
        manifest.start(output_dir, names)
        ckpt.remove_unfinished(output_dir)
    distributed.barrier()


def cut_log(path: Path, first_dropped: int) -> None:
    """Keep the records of `path` whose step is below `first_dropped`; drop torn or unreadable lines
    with a note. Rewritten atomically, so a crash here leaves the old log or the cut one."""
    if not path.is_file():
        return
    kept, torn = [], []
    raw = path.read_bytes()
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            step = json.loads(line).get("step", 0)
            if not isinstance(step, (int, float)):
                raise ValueError(step)
        except (ValueError, AttributeError):  # torn, not JSON, or not a record
            torn.append(number)
            continue
        if step < first_dropped:
            kept.append(line)
    if torn:
        print(
            f"strop: note: {path.name}: dropped {len(torn)} unreadable line(s) ({', '.join(map(str, torn[:5]))}), "
            "what a crash or a full disk leaves behind"
        )
    text = b"".join(line + b"\n" for line in kept)
    if text != raw:
        with disk_errors(path), staged_file(path) as tmp:
            tmp.write_bytes(text)


def cut_logs(output_dir: Path, logs: dict[str, int]) -> None:
    """Rank 0: cut every append-only log back to the records a run starting now keeps."""
    if distributed.is_main():
        for name, first_dropped in logs.items():
            cut_log(output_dir / name, first_dropped)
