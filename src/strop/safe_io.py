"""Writing files without ever clobbering something by accident, and saying why a write failed.

Every temporary output goes into a fresh private folder beside its target, made by `mkdtemp` (mode
0700, a random name, created by mkdir, which never reuses an existing path): a symbolic link planted at
a predictable temporary name can therefore never redirect a write outside the output folder. The
finished file or folder is moved into place with a rename, which replaces a link at the target rather
than writing through it.

A temporary folder is named `.<target>.tmp-<pid>-<random>` and holds an flock while its process works
in it, so a later run can tell a leftover of a killed process (SIGKILL runs no clean-up) from the work
of a live one, and removes only the former. The older name `.<target>.tmp-<pid>` is recognised too.

Disk-full and permission errors (an OSError, or the SafetensorError that wraps one) become one-line
StropErrors naming the file, the free space and what is left intact: the user's move is to free space
or fix permissions, not to read a traceback.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from strop.errors import StropError

TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.tmp-(?P<pid>\d+)(?:-[A-Za-z0-9_]+)?$")
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


def is_temp_name(name: str) -> bool:
    """Whether `name` is one of strop's temporary folders (of any target)."""
    return TEMP_NAME.match(name) is not None


def abandoned(entry: Path) -> bool:
    """Whether `entry` is a temporary folder whose process is gone: its pid is not running and nobody
    holds its lock, so a concurrent writer's folder (or one whose pid was reused) is left alone."""
    match = TEMP_NAME.match(entry.name)
    if match is None:
        return False
    pid = int(match.group("pid"))
    return pid != os.getpid() and not _pid_alive(pid) and not _locked_by_other(entry)


def remove_entry(path: Path) -> None:
    """Delete a file, a link (the link itself, never what it points at) or a real folder's tree."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


def _locked_by_other(path: Path) -> bool:
    """True while a live process holds the flock of temporary folder `path`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(target: Path) -> list[Path]:
    """Remove the abandoned temporary folders of `target`; returns what was removed."""
    removed: list[Path] = []
    if not target.parent.is_dir():
        return removed
    for entry in target.parent.iterdir():
        match = TEMP_NAME.match(entry.name)
        if match and match.group("target") == target.name and abandoned(entry):
            remove_entry(entry)
            removed.append(entry)
    if removed:
        print(f"strop: note: removed {len(removed)} leftover temporary folder(s) of an interrupted run beside {target}")
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def temp_folder(target: Path) -> Iterator[Path]:
    """A fresh private folder beside `target`, locked while in use and removed on exit (unless the body
    renamed it into place). Leftovers of killed earlier runs for the same target are removed first."""
    sweep_stale(target)
    with disk_errors(target.parent):
        target.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield folder
    finally:
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)


def publish_folder(folder: Path) -> None:
    """Give a private temporary folder the permissions a plain mkdir would have, before it becomes an
    output folder (mkdtemp makes it 0700)."""
    folder.chmod(0o777 & ~_umask())


@contextmanager
def staged_file(target: Path) -> Iterator[Path]:
    """A path to write `target`'s new content to; renamed over `target` when the body succeeds."""
    with temp_folder(target) as folder:
        path = folder / target.name
        yield path
        with disk_errors(target):
            os.replace(path, target)


def write_text(target: Path, text: str) -> Path:
    """Replace `target` with `text` atomically: a crash leaves the old content or the new, never half."""
    with disk_errors(target), staged_file(target) as path:
        path.write_text(text, encoding="utf-8")
    return target


def _os_errno(err: BaseException) -> int | None:
    """The errno of an OSError, or of the OS error a SafetensorError (a plain Exception) wraps."""
    if isinstance(err, OSError):
        return err.errno
    if type(err).__name__ == "SafetensorError":
        found = re.search(r"os error (\d+)", str(err))
        return int(found.group(1)) if found else None
    return None


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def describe_write_error(err: BaseException, where: Path, needed: int | None = None, intact: str = "") -> str | None:
    """A one-line message for a disk-full or permission error while writing `where` (a file, or a
    folder being filled by a library that does not say which of its files failed), or None for any
    other error."""
    code = _os_errno(err)
    if code not in _DISK_FULL | _DENIED:
        return None
    named = getattr(err, "filename", None)
    file = Path(named) if named else where
    tail = f"; {intact}" if intact else ""
    if code in _DENIED:
        reason = "the file system is read-only" if code == errno.EROFS else "permission denied"
        return f"cannot write {file}: {reason}{tail}"
    usage = shutil.disk_usage(_existing(where))
    need = f", about {human_size(needed)} needed" if needed else ""
    return (
        f"no space left on the device writing {file}: {human_size(usage.free)} free of "
        f"{human_size(usage.total)}{need}{tail}"
    )


_nesting = threading.local()


@contextmanager
def disk_errors(where: Path, needed: int | None = None, intact: str = "") -> Iterator[None]:
    """Turn a disk-full or permission error inside the body into a StropError about `where`.

    Blocks nest: the innermost names the file (it knows which one failed), outer ones add what they
    know (the space the whole save needs, what is left intact), and the outermost raises the message.
    """
    depth = getattr(_nesting, "depth", 0)
    _nesting.depth = depth + 1
    try:
        yield
    except Exception as err:
        if _os_errno(err) not in _DISK_FULL | _DENIED:
            raise
        context = err.__dict__.setdefault("strop_write", {})
        context.setdefault("where", where)
        context["needed"] = context.get("needed") or needed
        context["intact"] = context.get("intact") or intact
        if depth:
            raise
        raise StropError(describe_write_error(err, **context)) from err
    finally:
        _nesting.depth = depth
