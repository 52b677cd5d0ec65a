"""Which entries of an output folder strop wrote, so that replacing a run removes only those.

Every run writes `.strop-manifest.json` into its output folder before anything else, and adds each
top-level name to it before writing that name (`claim`). `--overwrite` and the replacement of a merged
model remove exactly the claimed entries that exist, and refuse a folder holding anything else: a
config, a dataset or notes the user keeps there are never deleted, whatever the flags. A folder without
a manifest was not written by this strop, so it is never emptied either.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from strop.errors import StropError
from strop.safe_io import abandoned, disk_errors, is_temp_name, publish_folder, remove_entry, write_text

MANIFEST = ".strop-manifest.json"
_FORMAT = "strop-output-manifest/1"


def read(folder: Path) -> list[str] | None:
    """The names strop claimed in `folder`, or None when it holds no (readable) manifest."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("written"), list):
        return None
    return [str(name) for name in data["written"]]


def _write(folder: Path, names: list[str]) -> None:
    write_text(folder / MANIFEST, json.dumps({"format": _FORMAT, "written": names}, indent=1) + "\n")


def start(folder: Path, names: list[str] | tuple[str, ...] = ()) -> None:
    """Mark `folder` as strop's output, keeping any earlier claims (a resumed run adds to them)."""
    with disk_errors(folder):
        folder.mkdir(parents=True, exist_ok=True)
    _write(folder, _merged(read(folder) or [], names))


def _merged(old: list[str], new: Iterable[str]) -> list[str]:
    return old + [name for name in dict.fromkeys(new) if name not in old and name != MANIFEST]


def claim(path: Path, *more: Path) -> None:
    """Record that strop is about to write `path` (and `more`, all in one folder), when that folder is
    a strop output folder; a no-op anywhere else (strop claims nothing in folders it did not start)."""
    folder = path.parent
    names = [p.name for p in (path, *more)]
    old = read(folder)
    if old is not None and any(name not in old for name in names):
        _write(folder, _merged(old, names))


def foreign(folder: Path) -> list[str]:
    """Entries of `folder` strop did not write (sorted); everything, when there is no manifest."""
    if not folder.is_dir():
        return []
    own = set(read(folder) or ()) | {MANIFEST}
    return sorted(e.name for e in folder.iterdir() if e.name not in own and not is_temp_name(e.name))


def describe(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_replaceable(folder: Path, what: str) -> None:
    """Refuse to replace `folder` unless it is absent, empty, or holds only what strop wrote there."""
    if folder.is_symlink() and not folder.exists():
        raise StropError(f"{what} {folder} is a broken symbolic link; remove it or choose another path")
    if folder.exists() and not folder.is_dir():
        raise StropError(f"{what} {folder} is a file, not a folder; choose a folder path")
    others = foreign(folder)
    if others:
        raise StropError(
            f"{what} {folder} holds files strop did not write ({describe(others)}); strop never "
            "deletes those: move them out or choose another folder"
        )


def remove_own(folder: Path) -> None:
    """Delete what strop claimed in `folder` (links themselves, never their targets), then the
    manifest; the folder itself and anything unclaimed stay. Stale temporary folders go too."""
    names = read(folder) or []
    for entry in list(folder.iterdir()):
        if entry.name in names or abandoned(entry):
            remove_entry(entry)
    (folder / MANIFEST).unlink(missing_ok=True)


def place_folder(staged: Path, out: Path, what: str) -> Path:
    """Move the finished temporary folder `staged` to `out`, replacing only an empty folder or one
    strop wrote (checked again here, so nothing that arrived meanwhile is lost). The new folder's
    manifest claims all it holds; an old one is swapped aside first, so `out` is never half-written."""
    start(staged, [entry.name for entry in staged.iterdir()])
    publish_folder(staged)
    claim(out)
    if not out.exists() and not out.is_symlink():
        os.replace(staged, out)
        return out
    check_replaceable(out, what)
    old = out.with_name(f".{out.name}.tmp-{os.getpid()}-old{secrets.token_hex(4)}")
    os.replace(out, old)
    os.replace(staged, out)
    remove_entry(old)
    return out
