"""Run untrusted Python — code a policy wrote during RL — in a throwaway child process, isolated by the
operating system in layers, each of which holds on its own (tests switch the others off):

1. namespaces (bubblewrap): the child sees a minimal read-only root (the interpreter, its standard
   library, the shared libraries it links, a minimal /dev, its own /proc) and a size-limited tmpfs as
   its working folder; no network (an empty network namespace), no other process (its own PID
   namespace, killed whole with bubblewrap), no host IPC or hostname.
2. drop_user: as root, the child becomes an unused uid/gid with no supplementary groups and no
   capabilities before it reads any untrusted code.
3. seccomp: the kernel refuses non-AF_UNIX sockets, new processes, ptrace and cross-process memory
   access, mounts and namespaces, keyrings, bpf, perf, io_uring and the usual container deny list.
4. rlimits (set by the child on itself, soft = hard): address space (`memory_mb`), CPU time (the
   timeout + 1 s), file size (`file_mb`), 64 open files, no core dumps, no new processes.
5. cgroup (as root, where writable): pids.max bounds the whole sandbox's tasks.
6. audit hook (PEP 578): refuses sockets, processes, signals, frame and gc introspection and file
   access outside the folder and the standard library, at the Python level; a filter, not a boundary.

Beside them: an environment holding only HOME and TMPDIR (the folder) and one-thread BLAS settings;
the wall-time limit, at which the parent kills the child's process group (and with it the namespace);
the folder is deleted afterwards.

`sandbox="strict"` (the default) refuses to run when a layer cannot be set up here, naming what is
missing and how to install it; `sandbox="relaxed"` runs with the layers that work (see
`isolation.warn_relaxed` for its warning). Details of each layer: isolation.py, seccomp.py, child.py.

`run_tests` runs a solution and then each test in the same child and reports per-test pass/fail that
Python code cannot forge: the child writes `<nonce> <index> <0|1>` lines to a pipe the parent reads,
not to stdout; the nonce arrives on stdin (not in argv or the environment) and lives only in local
variables of a function the untrusted code cannot reach (its module-level name is deleted, and frame
and gc introspection are refused); after the untrusted code starts, the runner looks up no global or
builtin name, so patching `builtins` cannot flip a verdict. A test with no line, or with more than
one, failed (a solution that exits or hangs early fails the rest). What still trusts the code: native code the solution loads
runs inside the same process as the runner and can rewrite that process's own verdicts (the layers
bound what it reaches, not what it reports about itself), and a solution that games the tests' own
semantics (an object whose `__eq__` always returns True) passes them.
"""

from __future__ import annotations

import hmac
import json
import math
import os
import secrets
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from strop.rl.sandbox import child, isolation
from strop.rl.sandbox.isolation import Layers, SandboxUnavailable, SandboxWarning, missing_layers, warn_relaxed

OUTPUT_LIMIT = 64 * 1024
REPORT_LIMIT = 1024 * 1024
ENTER_CGROUP = 'echo $$ 2>/dev/null > "$0"; exec "$@"'  # the cgroup is a best-effort layer: start regardless

__all__ = [
    "Layers",
    "SandboxResult",
    "SandboxUnavailable",
    "SandboxWarning",
    "TestRun",
    "missing_layers",
    "run_python",
    "run_tests",
    "warn_relaxed",
]


@dataclass
class SandboxResult:
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    elapsed_s: float


@dataclass
class TestRun:
    """Per-test outcomes of `run_tests`, and the run itself (stdout/stderr help to see why)."""

    passed: list[bool]
    result: SandboxResult
    __test__ = False  # not a pytest class

    @property
    def fraction(self) -> float:
        return sum(self.passed) / len(self.passed) if self.passed else 0.0


def run_python(
    code: str,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    file_mb: int = 16,
    *,
    sandbox: str = "strict",
    layers: Layers = Layers(),
) -> SandboxResult:
    """Run `code` as a script (`__name__ == "__main__"`) in the sandbox."""
    result, _ = _execute({"mode": "run", "code": code}, timeout_s, memory_mb, file_mb, isolation.plan(layers, sandbox))
    return result


def run_tests(
    code: str,
    tests: list[str],
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    file_mb: int = 16,
    *,
    sandbox: str = "strict",
    layers: Layers = Layers(),
) -> TestRun:
    """Run `code` (as module `solution`), then each test in its namespace; one child for all of them."""
    nonce = secrets.token_hex(16)
    result, report = _execute(
        {"mode": "tests", "code": code, "tests": list(tests), "nonce": nonce},
        timeout_s,
        memory_mb,
        file_mb,
        isolation.plan(layers, sandbox),
    )
    verdicts: dict[int, list[str]] = {}
    for line in report.decode("ascii", "replace").splitlines():
        parts = line.split()
        if len(parts) == 3 and hmac.compare_digest(parts[0], nonce) and parts[1].isdigit():
            verdicts.setdefault(int(parts[1]), []).append(parts[2])
    return TestRun([verdicts.get(index) == ["1"] for index in range(len(tests))], result)


def _command(plan: isolation.Plan, folder: str, file_mb: int, cgroup: str | None, seccomp_fd: int | None) -> list[str]:
    """The child's command line: [enter the cgroup,] [bubblewrap,] the interpreter and the child's source."""
    command = [sys.executable, "-I", "-B", "-c", child.source()]
    if plan.namespaces:
        settings = [arg for name, value in _environment(folder).items() for arg in ("--setenv", name, value)]
        command = [
            *isolation.bwrap_command(folder, file_mb, plan.drop is not None, seccomp_fd),
            "--clearenv",
            *settings,
            isolation.python_executable(),
            *command[1:],
        ]
    return ["/bin/sh", "-c", ENTER_CGROUP, os.path.join(cgroup, "cgroup.procs"), *command] if cgroup else command


def _environment(folder: str) -> dict[str, str]:
    return {"HOME": folder, "TMPDIR": folder, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def _execute(
    job: dict, timeout_s: float, memory_mb: int, file_mb: int, plan: isolation.Plan
) -> tuple[SandboxResult, bytes]:
    folder = tempfile.mkdtemp(prefix="strop-sandbox-")
    cgroup = isolation.make_cgroup() if plan.cgroup else None
    read_end, write_end = os.pipe()
    seccomp_fd = _seccomp_pipe() if plan.seccomp else None
    job |= {
        "report_fd": write_end,
        "memory_mb": memory_mb,
        "file_mb": file_mb,
        "cpu_s": math.ceil(timeout_s) + 1,
        "drop": plan.drop,
        "hook": plan.audit_hook,
        "rlimits": plan.rlimits,
    }
    command = _command(plan, folder, file_mb, cgroup, seccomp_fd)
    started, proc = time.monotonic(), None
    try:
        try:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=folder,
                env=_environment(folder),
                start_new_session=True,
                pass_fds=(write_end,) if seccomp_fd is None else (write_end, seccomp_fd),
            )
        finally:
            os.close(write_end)
            if seccomp_fd is not None:
                os.close(seccomp_fd)
        pipes = _Pipes(proc, read_end, json.dumps(job).encode())
        pipes.pump(started + timeout_s)
        timed_out = not _exited(proc.pid, started + timeout_s)
        _kill_group(proc.pid)
        proc.wait()
        pipes.pump(time.monotonic() + 1.0)
        pipes.close()
    finally:
        if proc is not None and proc.returncode is None:  # only if something above failed
            _kill_group(proc.pid)
            proc.wait()
        os.close(read_end)
        shutil.rmtree(folder, onerror=_force_remove)
        if cgroup:
            isolation.remove_cgroup(cgroup)
    out = pipes.buffers
    result = SandboxResult(
        proc.returncode,
        out["stdout"].decode("utf-8", "replace"),
        out["stderr"].decode("utf-8", "replace"),
        timed_out,
        time.monotonic() - started,
    )
    return result, bytes(out["report"])


def _seccomp_pipe() -> int:
    """A pipe's read end holding the compiled filter, for bubblewrap's --seccomp (it fits in the pipe buffer)."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, isolation.seccomp.program())
    finally:
        os.close(write_end)
    return read_end


class _Pipes:
    """Feeds the job to the child's stdin and collects stdout, stderr and the report pipe, without
    blocking on any one of them and keeping at most a bounded amount of each."""

    def __init__(self, proc: subprocess.Popen, report_fd: int, payload: bytes):
        self.proc, self.selector = proc, selectors.DefaultSelector()
        self.buffers = {"stdout": bytearray(), "stderr": bytearray(), "report": bytearray()}
        self.limits = {"stdout": OUTPUT_LIMIT, "stderr": OUTPUT_LIMIT, "report": REPORT_LIMIT}
        for name, fd in (("stdout", proc.stdout.fileno()), ("stderr", proc.stderr.fileno()), ("report", report_fd)):
            self.selector.register(fd, selectors.EVENT_READ, name)
        self.stdin, self.payload = proc.stdin, memoryview(payload)
        os.set_blocking(self.stdin.fileno(), False)
        self.selector.register(self.stdin.fileno(), selectors.EVENT_WRITE, "stdin")

    def pump(self, deadline: float) -> None:
        while self.selector.get_map() and (remaining := deadline - time.monotonic()) > 0:
            for key, _ in self.selector.select(remaining):
                if key.data == "stdin":
                    self._feed(key.fd)
                    continue
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    self.selector.unregister(key.fd)
                buffer = self.buffers[key.data]
                buffer += chunk[: max(0, self.limits[key.data] - len(buffer))]

    def close(self) -> None:
        self.selector.close()
        for stream in (self.stdin, self.proc.stdout, self.proc.stderr):
            stream.close()

    def _feed(self, fd: int) -> None:
        try:
            self.payload = self.payload[os.write(fd, self.payload) :]
        except BlockingIOError:
            return
        except BrokenPipeError:
            self.payload = self.payload[:0]
        if not self.payload:
            self.selector.unregister(fd)
            self.stdin.close()


def _exited(pid: int, deadline: float) -> bool:
    """Wait until the child exits (leaving it unreaped, so its process group id stays ours) or the deadline."""
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _force_remove(function, path, exc_info) -> None:
    """rmtree's error handler: the child may have made a folder unwritable; make it writable, retry."""
    try:
        os.chmod(os.path.dirname(path), stat.S_IRWXU)
        os.chmod(path, stat.S_IRWXU)
        (shutil.rmtree if os.path.isdir(path) and not os.path.islink(path) else os.remove)(path)
    except OSError:
        pass
