"""Run untrusted Python — code a policy wrote during RL — in a throwaway child process with limits.

What it guarantees, and how:
- A separate process, `python -I -B` (isolated mode: no PYTHON* variables, no user site-packages, no
  script folder on sys.path), in its own session, with a fresh temp folder as its working folder that
  is deleted afterwards, and an environment holding only HOME and TMPDIR (that folder) and one-thread
  settings for BLAS: none of the trainer's variables (tokens, keys) reach it.
- Wall time: at `timeout_s` the parent kills the child's whole process group.
- rlimits the child sets on itself before any untrusted code runs, soft = hard so they cannot be
  raised again: RLIMIT_AS (`memory_mb`), RLIMIT_CPU (the timeout, rounded up, + 1 s), RLIMIT_FSIZE
  (`file_mb`), RLIMIT_NOFILE (64), RLIMIT_CORE (0) and RLIMIT_NPROC (0: no new processes — but the
  kernel never applies RLIMIT_NPROC to root, and root could raise hard limits without a user namespace).
- Namespaces, where `unshare --user --net --pid --fork --kill-child` works (probed once; it does on
  the development machine): no network at all (a fresh network namespace with loopback down), and a
  PID namespace in which the child sees and can signal only its own processes, all of which die with it.
- A PEP 578 audit hook (sys.addaudithook, which cannot be removed) installed before the untrusted
  code runs. It refuses: sockets and name lookups; process creation (fork, exec, spawn, system,
  subprocess, and importing _posixsubprocess or ctypes); signals; rlimit changes and new audit hooks;
  code-object construction; frame and garbage-collector introspection (sys._getframe, tracing and
  profiling, tb_frame/gi_frame, gc.get_objects — they would reach the test runner's secret);
  writes, renames, deletes and permission changes outside the temp folder; reads and listings outside
  the temp folder and Python's own installation (its prefixes and stdlib, so imports work); links;
  opening directories, devices and inherited descriptors; paths that are not plain str/bytes (a
  PathLike could name one file to the hook and another to open()). The hook resolves symbolic links
  itself and uses only functions bound before the untrusted code runs, so monkeypatching `os.path` or
  builtins cannot change its answers; an error inside it refuses the operation.

Limits, honestly: the audit hook runs inside the interpreter it guards. It stops Python-level access,
not native code: a crafted code object, a bug in an extension module, or an extension module the code
writes and loads itself runs unseen. The hook is a filter, not a security boundary; the boundaries are
the process, the rlimits, the empty environment and, where available, the namespaces. File access
outside the temp folder is then limited only by ordinary permissions — weak when training runs as
root. For code from a policy that might be adversarial rather than merely wrong, run training in a
container or VM without secrets mounted.

`run_tests` runs a solution and then each test in the same child and reports per-test pass/fail that
the solution cannot forge: the child writes `<nonce> <index> <0|1>` lines to a pipe the parent reads,
not to stdout; the nonce arrives on stdin (not in argv or the environment) and lives only in local
variables of a function the untrusted code cannot reach (its module-level name is deleted, and frame
and gc introspection are refused); after the untrusted code starts, the runner looks up no global or
builtin name, so patching `builtins` cannot flip a verdict. A test with no line failed (a solution
that exits or hangs early fails the rest). What no sandbox can see: a solution that games the tests'
own semantics (an object whose `__eq__` always returns True) passes them.
"""

from __future__ import annotations

import functools
import hmac
import inspect
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

OUTPUT_LIMIT = 64 * 1024
REPORT_LIMIT = 1024 * 1024
UNSHARE_FLAGS = (["--user", "--map-current-user", "--net", "--pid", "--fork", "--kill-child"],
                 ["--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child"])


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


def run_python(code: str, timeout_s: float = 5.0, memory_mb: int = 512, file_mb: int = 16) -> SandboxResult:
    """Run `code` as a script (`__name__ == "__main__"`) in the sandbox."""
    result, _ = _execute({"mode": "run", "code": code}, timeout_s, memory_mb, file_mb)
    return result


def run_tests(code: str, tests: list[str], timeout_s: float = 5.0, memory_mb: int = 512,
              file_mb: int = 16) -> TestRun:
    """Run `code` (as module `solution`), then each test in its namespace; one child for all of them."""
    nonce = secrets.token_hex(16)
    result, report = _execute({"mode": "tests", "code": code, "tests": list(tests), "nonce": nonce},
                              timeout_s, memory_mb, file_mb)
    passed = [False] * len(tests)
    for line in report.decode("ascii", "replace").splitlines():
        parts = line.split()
        if len(parts) == 3 and hmac.compare_digest(parts[0], nonce) and parts[1].isdigit():
            index = int(parts[1])
            if index < len(passed):
                passed[index] = parts[2] == "1"
    return TestRun(passed, result)


@functools.cache
def namespace_prefix() -> tuple[str, ...]:
    """The `unshare ...` command prefix that works here, or () when user namespaces are unavailable."""
    unshare = shutil.which("unshare")
    for flags in UNSHARE_FLAGS if unshare else ():
        try:
            probe = subprocess.run([unshare, *flags, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0:
            return (unshare, *flags, "--")
    return ()


@functools.cache
def _child_source() -> str:
    parts = [inspect.getsource(fn) for fn in (_child_limits, _child_hook, _child_main)]
    return "\n\n".join(parts) + "\n_child_main()\n"


def _execute(job: dict, timeout_s: float, memory_mb: int, file_mb: int) -> tuple[SandboxResult, bytes]:
    folder = tempfile.mkdtemp(prefix="strop-sandbox-")
    read_end, write_end = os.pipe()
    job |= {"report_fd": write_end, "memory_mb": memory_mb, "file_mb": file_mb, "cpu_s": math.ceil(timeout_s) + 1}
    command = [*namespace_prefix(), sys.executable, "-I", "-B", "-c", _child_source()]
    env = {"HOME": folder, "TMPDIR": folder, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    started, proc = time.monotonic(), None
    try:
        try:
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    cwd=folder, env=env, start_new_session=True, pass_fds=(write_end,))
        finally:
            os.close(write_end)
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
    out = pipes.buffers
    result = SandboxResult(proc.returncode, out["stdout"].decode("utf-8", "replace"),
                           out["stderr"].decode("utf-8", "replace"), timed_out, time.monotonic() - started)
    return result, bytes(out["report"])


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
                buffer += chunk[:max(0, self.limits[key.data] - len(buffer))]

    def close(self) -> None:
        self.selector.close()
        for stream in (self.stdin, self.proc.stdout, self.proc.stderr):
            stream.close()

    def _feed(self, fd: int) -> None:
        try:
            self.payload = self.payload[os.write(fd, self.payload):]
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


# Everything below runs in the child only: shipped as source with `python -c`, never called here.

def _child_limits(job):
    """Set the rlimits (soft = hard, never above an existing hard limit)."""
    import resource

    megabyte = 1024 * 1024
    wanted = [(resource.RLIMIT_AS, job["memory_mb"] * megabyte), (resource.RLIMIT_CPU, job["cpu_s"]),
              (resource.RLIMIT_FSIZE, job["file_mb"] * megabyte), (resource.RLIMIT_NOFILE, 64),
              (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, 0)]
    for kind, value in wanted:
        hard = resource.getrlimit(kind)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(kind, (value, value))


def _child_hook(temp, roots):
    """The audit hook (see the module docstring). It uses only names bound here and C functions."""
    import os
    import stat

    class Refused(PermissionError, ValueError):
        """A refused operation; also a ValueError, as stdlib code probing sys._getframe expects."""

    class RefusedImport(ImportError):
        """A refused import: an ImportError, so `try: import ctypes / except ImportError` still works."""

    lstat, stat_of, readlink, getcwd = os.lstat, os.stat, os.readlink, os.getcwd
    is_link, is_regular = stat.S_ISLNK, stat.S_ISREG
    type_of, str_type, bytes_type, int_type, os_error, base_error = type, str, bytes, int, OSError, BaseException
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    writable, readable = (temp,), (temp, *roots)
    refused = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
               "os.kill", "os.link", "os.symlink", "os.startfile", "signal.", "pty.", "ctypes.", "resource.set",
               "resource.prlimit", "sys.addaudithook", "sys._getframe", "sys._current_", "sys.settrace",
               "sys.setprofile", "gc.get_", "code.__new__", "webbrowser.")
    refused_imports = ("ctypes", "_ctypes", "_posixsubprocess", "posix", "_testcapi", "_testinternalcapi",
                       "_xxsubinterpreters")
    frame_attributes = ("tb_frame", "gi_frame", "cr_frame", "ag_frame")
    write_events = ("os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.utime", "os.truncate",
                    "os.setxattr", "os.removexattr", "os.chflags", "os.lchflags", "os.lchmod", "os.chdir")
    read_events = ("os.listdir", "os.scandir", "os.listxattr", "os.getxattr", "glob.glob", "glob.glob/2")

    def resolve(path):
        if type_of(path) is bytes_type:
            path = path.decode("utf-8", "surrogateescape")
        elif type_of(path) is not str_type:
            raise Refused("sandbox: paths must be str or bytes")
        pending, resolved, hops = (path if path.startswith("/") else getcwd() + "/" + path).split("/")[::-1], "", 0
        while pending:
            part = pending.pop()
            if part == "" or part == ".":
                continue
            if part == "..":
                resolved = resolved.rpartition("/")[0]
                continue
            candidate = resolved + "/" + part
            try:
                mode = lstat(candidate).st_mode
            except os_error:
                mode = 0
            if not is_link(mode):
                resolved = candidate
                continue
            hops += 1
            if hops > 40:
                raise Refused("sandbox: too many symbolic links")
            target = readlink(candidate)
            resolved = "" if target.startswith("/") else resolved
            pending += target.split("/")[::-1]
        return resolved or "/"

    def check_path(path, folders):
        if path is None:
            path = "."
        if type_of(path) is int_type:  # an already opened descriptor, checked when it was opened
            return
        real = resolve(path)
        for folder in folders:
            if real == folder or real.startswith(folder + "/"):
                return
        raise Refused(f"sandbox: {real} is outside the sandbox folder")

    def check_open(path, flags):
        if type_of(path) is int_type:
            if path > 2:
                raise Refused("sandbox: opening inherited file descriptors is not allowed")
            return
        writing = type_of(flags) is not int_type or flags & write_flags
        check_path(path, writable if writing else readable)
        try:
            mode = stat_of(resolve(path)).st_mode
        except os_error:
            return  # created as a regular file
        if not is_regular(mode):
            raise Refused("sandbox: only regular files can be opened")

    def decide(event, args):
        if event == "open":
            check_open(args[0], args[2])
        elif event.startswith(refused):
            raise Refused(f"sandbox: {event} is not allowed")
        elif event == "object.__getattr__":
            if args[1] in frame_attributes:
                raise Refused("sandbox: frame introspection is not allowed")
        elif event == "import":
            if args[0] in refused_imports:
                raise RefusedImport(f"sandbox: importing {args[0]} is not allowed")
        elif event == "os.rename":
            if not (args[2] is None or args[2] < 0) or not (args[3] is None or args[3] < 0):
                raise Refused("sandbox: dir_fd is not allowed")
            check_path(args[0], writable)
            check_path(args[1], writable)
        elif event in write_events:
            if event in ("os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.utime") \
                    and not (args[-1] is None or args[-1] < 0):
                raise Refused("sandbox: dir_fd is not allowed")
            check_path(args[0], writable)
        elif event in read_events:
            check_path(args[0], readable)

    def hook(event, args):
        try:
            decide(event, args)
        except (Refused, RefusedImport):
            raise
        except base_error as error:
            raise Refused(f"sandbox: {event} refused ({error!r})") from None

    return hook


def _child_main():
    """Read the job from stdin, limit, compile, hook, then run the untrusted code (and the tests)."""
    import builtins
    import json
    import os
    import posix
    import sys
    import sysconfig

    job = json.loads(sys.stdin.buffer.read())
    _child_limits(job)
    temp = os.path.realpath(os.getcwd())
    paths = sysconfig.get_paths()
    roots = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                                           paths["stdlib"], paths["platstdlib"], paths["purelib"], paths["platlib"])}
    hook = _child_hook(temp, tuple(sorted(roots)))
    tests = []
    for index, test in enumerate(job.get("tests", [])):
        try:
            tests.append((index, compile(test, f"<test {index}>", "exec")))
        except (SyntaxError, ValueError):
            tests.append((index, None))
    for module in (os, posix):  # unaudited ways to make nodes outside the folder or reach other processes
        for name in ("mkfifo", "mknod", "pidfd_open"):
            module.__dict__.pop(name, None)
    run, failure, write, stderr = exec, BaseException, os.write, sys.stderr
    nonce, report_fd, mode = job.pop("nonce", ""), job["report_fd"], job["mode"]
    namespace = {"__name__": "__main__" if mode == "run" else "solution", "__builtins__": builtins}
    solution = job.pop("code")
    for name in ("_child_limits", "_child_hook", "_child_main"):
        globals().pop(name, None)
    del job, paths
    sys.addaudithook(hook)
    if mode == "run":
        run(compile(solution, "<sandbox>", "exec"), namespace)
        return
    # From here on: locals only, no global or builtin lookups (the untrusted code may have patched them).
    try:
        run(compile(solution, "<solution>", "exec"), namespace)
        solved = True
    except failure as error:
        solved = False
        stderr.write(f"solution failed: {error!r}\n")
    for index, test in tests:
        passed = False
        if solved and test is not None:
            try:
                run(test, namespace)
                passed = True
            except failure as error:
                try:
                    stderr.write(f"test {index} failed: {error!r}\n")
                except failure:
                    pass
        write(report_fd, f"{nonce} {index} {'1' if passed else '0'}\n".encode())
