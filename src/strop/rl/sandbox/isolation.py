"""The operating-system layers around a sandboxed child, and how each is set up.

- namespaces (bubblewrap): new mount, PID, network, IPC, UTS and cgroup namespaces, plus a user
  namespace when strop is not root (that is what lets an ordinary user create the others; the child
  cannot make further ones). The root of the child's file system is an empty read-only tmpfs holding
  only the interpreter, its standard library (its site-packages hidden under an empty read-only tmpfs),
  the folders of the shared libraries the interpreter links, a minimal /dev, the /proc of its own PID
  namespace, and the working folder: a size-limited tmpfs at the throwaway folder's path. Bubblewrap
  is a tool made for exactly this, so its few hundred lines of mount set-up are not repeated here.
- drop_user (as root): bubblewrap starts the child as root with every capability dropped except
  CAP_SETUID and CAP_SETGID, and the child's first act is setgroups([]), setresgid, setresuid to an
  unused id; the kernel then clears its capabilities. No user namespace is made as root: one would map
  the child to the host's root, which is what this layer removes.
- seccomp: the filter of `seccomp.py`, loaded by bubblewrap before the child starts.
- cgroup (as root, where a pids hierarchy is writable): a fresh cgroup per run whose pids.max bounds
  the tasks of the whole sandbox; the launcher shell enters it before anything else runs, so every
  descendant is counted. It is not required even in strict mode: the seccomp filter and RLIMIT_NPROC
  already refuse new processes; the cgroup is the bound that holds if both were gone.
- audit_hook: the in-interpreter filter of `child.py`.

`Layers` names the wanted layers (tests switch them off one at a time); `plan` turns it into what a
run will use, refusing in strict mode when a wanted layer cannot be set up here.
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import warnings
from dataclasses import dataclass

from strop.errors import StropError
from strop.rl.sandbox import seccomp

FIRST_UNUSED_ID = 1_999_900_000
CGROUP_PIDS_MAX = 16
INSTALL_BWRAP = "install bubblewrap (`apt-get install bubblewrap`, or your distribution's package)"


class SandboxUnavailable(StropError):
    """Strict mode and an isolation layer that cannot be set up on this machine."""


class SandboxWarning(UserWarning):
    """Relaxed mode: code rewards run without some isolation layer."""


@dataclass(frozen=True)
class Layers:
    """Which layers a run wants (see the module docstring); all of them by default."""

    namespaces: bool = True
    drop_user: bool = True
    seccomp: bool = True
    cgroup: bool = True
    audit_hook: bool = True
    rlimits: bool = True


@dataclass(frozen=True)
class Plan:
    """What one run uses: layers that are wanted and available."""

    namespaces: bool
    drop: tuple[int, int] | None
    seccomp: bool
    cgroup: bool
    audit_hook: bool
    rlimits: bool


def plan(layers: Layers, mode: str) -> Plan:
    """The layers a run will use; strict mode raises SandboxUnavailable when a wanted one is missing."""
    if mode not in ("strict", "relaxed"):
        raise ValueError(f"sandbox mode must be 'strict' or 'relaxed', not {mode!r}")
    missing = missing_layers(layers)
    if missing and mode == "strict":
        raise SandboxUnavailable(
            describe(missing) + " Or set `sandbox: relaxed` on the code reward to run the "
            "code anyway with the layers that work here (not for untrusted code)."
        )
    namespaces = layers.namespaces and "namespaces" not in missing
    drop = unused_ids() if layers.drop_user and os.geteuid() == 0 and namespaces else None
    return Plan(
        namespaces,
        drop,
        layers.seccomp and namespaces and "seccomp" not in missing,
        layers.cgroup and pids_hierarchy() is not None,
        layers.audit_hook,
        layers.rlimits,
    )


def missing_layers(layers: Layers = Layers()) -> dict[str, str]:
    """Wanted layers that cannot be set up here, each with the reason and the fix (the cgroup is optional)."""
    missing = {}
    namespaces = namespaces_unavailable() if layers.namespaces else "the namespaces layer is switched off"
    if layers.namespaces and namespaces:
        missing["namespaces"] = namespaces
    if layers.drop_user and os.geteuid() == 0 and namespaces:
        missing["drop_user"] = (
            "dropping root needs the namespaces layer (the interpreter must be readable to the new user)"
        )
    if layers.seccomp:
        reason = seccomp.unavailable() or (namespaces and "the seccomp filter is loaded by bubblewrap")
        if reason:
            missing["seccomp"] = reason
    return missing


def describe(missing: dict[str, str]) -> str:
    return (
        "sandbox: cannot isolate model-written code here: "
        + "; ".join(f"{layer}: {reason}" for layer, reason in missing.items())
        + "."
    )


def warn_relaxed(layers: Layers = Layers()) -> None:
    """The loud warning of relaxed mode: what is missing, or that nothing is."""
    missing = missing_layers(layers)
    what = describe(missing) if missing else "sandbox: every isolation layer works here"
    warnings.warn(
        f"{what} `sandbox: relaxed` runs model-written code regardless; use it only for code you "
        "trust, never for a policy that might learn to attack its reward.",
        SandboxWarning,
        stacklevel=2,
    )


@functools.cache
def namespaces_unavailable() -> str | None:
    """Why bubblewrap cannot run the interpreter here, or None: checked once by running it."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return f"bubblewrap (bwrap) is not installed; {INSTALL_BWRAP}"
    try:
        mounts()
        folder = tempfile.mkdtemp(prefix="strop-sandbox-probe-")
        try:
            probe = subprocess.run(
                [*bwrap_command(folder, 1), python_executable(), "-I", "-c", "pass"],
                capture_output=True,
                text=True,
                timeout=30,
                cwd="/",
            )
        finally:
            os.rmdir(folder)
    except (OSError, subprocess.SubprocessError) as error:
        return f"bubblewrap could not be started: {error}"
    if probe.returncode != 0:
        return (
            f"bubblewrap failed ({probe.stderr.strip()[-300:]}); it needs user namespaces when not run as "
            "root (sysctl kernel.unprivileged_userns_clone=1), and a container may forbid them"
        )
    return None


def python_executable() -> str:
    """The base interpreter (not a virtual environment's link to it): it finds its stdlib by its own path."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


@functools.cache
def mounts() -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """((source, destination) read-only binds, folders hidden under an empty tmpfs), worked out once."""
    executable = python_executable()
    binds = {executable: executable}
    paths = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix})
    for key in ("stdlib", "platstdlib"):
        binds[paths[key]] = os.path.realpath(paths[key])
    linked = subprocess.run(["ldd", executable], capture_output=True, text=True, timeout=30, check=True).stdout
    for line in linked.splitlines():
        path = line.split("=>")[-1].split("(")[0].strip()
        if path.startswith("/"):
            destination = os.path.dirname(path) if "=>" in line else path  # the folder of a library; the loader
            binds[destination] = os.path.realpath(destination)
    hidden = {
        paths[key]
        for key in ("purelib", "platlib")
        if any(paths[key].startswith(destination + "/") for destination in binds)
    }
    return tuple((source, destination) for destination, source in sorted(binds.items())), tuple(sorted(hidden))


def bwrap_command(folder: str, folder_mb: int, drop: bool = False, seccomp_fd: int | None = None) -> list[str]:
    """bubblewrap's arguments up to the command it runs (see the module docstring)."""
    command = [
        shutil.which("bwrap") or "bwrap",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "sandbox",
    ]
    if os.geteuid() == 0:
        command += ["--cap-drop", "ALL"] + (["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"] if drop else [])
    else:
        command += ["--unshare-user", "--disable-userns"]
    binds, hidden = mounts()
    made: set[str] = set()
    for destination in [destination for _, destination in binds] + [folder]:
        parts = destination.split("/")
        for depth in range(2, len(parts)):  # parents made 0755: bubblewrap would copy a 0700 /root
            parent = "/".join(parts[:depth])
            if parent not in made:
                made.add(parent)
                command += ["--perms", "0755", "--dir", parent]
    for source, destination in binds:
        command += ["--ro-bind", source, destination]
    for folder_hidden in hidden:
        command += ["--tmpfs", folder_hidden, "--remount-ro", folder_hidden]
    command += [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--perms",
        "0777",
        "--size",
        str(folder_mb * 1024 * 1024),
        "--tmpfs",
        folder,
        "--remount-ro",
        "/",
        "--chdir",
        folder,
    ]
    return command + (["--seccomp", str(seccomp_fd)] if seccomp_fd is not None else [])


@functools.cache
def unused_ids() -> tuple[int, int]:
    """A uid and gid that no account or group on this machine uses."""
    uid = next(i for i in range(FIRST_UNUSED_ID, FIRST_UNUSED_ID + 10_000) if not _exists(pwd.getpwuid, i))
    gid = next(i for i in range(FIRST_UNUSED_ID, FIRST_UNUSED_ID + 10_000) if not _exists(grp.getgrgid, i))
    return uid, gid


def _exists(lookup, number: int) -> bool:
    try:
        lookup(number)
    except KeyError:
        return False
    return True


@functools.cache
def pids_hierarchy() -> str | None:
    """A writable cgroup hierarchy with the pids controller (v1, or v2 with pids enabled), as root; else None."""
    if os.geteuid() != 0:
        return None
    with open("/proc/self/mounts") as table:
        entries = [line.split()[1:4] for line in table]
    for mountpoint, kind, options in entries:
        if kind == "cgroup" and "pids" in options.split(","):
            candidate = mountpoint
        elif kind == "cgroup2" and "pids" in _read(os.path.join(mountpoint, "cgroup.subtree_control")).split():
            candidate = mountpoint
        else:
            continue
        if os.access(candidate, os.W_OK):
            return candidate
    return None


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def make_cgroup() -> str | None:
    """A fresh cgroup for one run, its pids.max set; None when there is no writable hierarchy or it fails."""
    root = pids_hierarchy()
    if root is None:
        return None
    try:
        path = tempfile.mkdtemp(prefix="strop-sandbox-", dir=root)
    except OSError:
        return None
    try:
        with open(os.path.join(path, "pids.max"), "w") as limit:
            limit.write(str(CGROUP_PIDS_MAX))
    except OSError:
        os.rmdir(path)
        return None
    return path


def remove_cgroup(path: str) -> None:
    """rmdir once the run's tasks are gone (the PID namespace dies with bubblewrap, a moment later)."""
    deadline = time.monotonic() + 2.0
    while True:
        try:
            os.rmdir(path)
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
