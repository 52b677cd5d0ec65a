"""The sandboxed child: shipped as source to `python -I -B -c`, never called in the trainer.

`_child_main` reads the job from stdin, becomes the unused user when the job says so (setgroups([]),
setresgid, setresuid: the kernel then clears every capability bubblewrap left it), sets its rlimits
(soft = hard, so they cannot be raised again), installs the audit hook, and only then compiles and runs
the untrusted code. The audit hook is a Python-level filter, not a boundary (native code walks past it);
see the package docstring for what it refuses and what the operating-system layers add.
"""

from __future__ import annotations

import functools
import inspect


@functools.cache
def source() -> str:
    parts = [inspect.getsource(fn) for fn in (_child_limits, _child_hook, _child_main)]
    return "\n\n".join(parts) + "\n_child_main()\n"


def _child_limits(job):
    """Set the rlimits (soft = hard, never above an existing hard limit)."""
    import resource

    megabyte = 1024 * 1024
    wanted = [
        (resource.RLIMIT_AS, job["memory_mb"] * megabyte),
        (resource.RLIMIT_CPU, job["cpu_s"]),
        (resource.RLIMIT_FSIZE, job["file_mb"] * megabyte),
        (resource.RLIMIT_NOFILE, 64),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NPROC, 0),
    ]
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
    refused = (
        "socket.",
        "subprocess.",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.kill",
        "os.link",
        "os.symlink",
        "os.startfile",
        "signal.",
        "pty.",
        "ctypes.",
        "resource.set",
        "resource.prlimit",
        "sys.addaudithook",
        "sys._getframe",
        "sys._current_",
        "sys.settrace",
        "sys.setprofile",
        "gc.get_",
        "code.__new__",
        "webbrowser.",
    )
    refused_imports = (
        "ctypes",
        "_ctypes",
        "_posixsubprocess",
        "posix",
        "_testcapi",
        "_testinternalcapi",
        "_xxsubinterpreters",
    )
    frame_attributes = ("tb_frame", "gi_frame", "cr_frame", "ag_frame")
    write_events = (
        "os.remove",
        "os.rmdir",
        "os.mkdir",
        "os.chmod",
        "os.chown",
        "os.utime",
        "os.truncate",
        "os.setxattr",
        "os.removexattr",
        "os.chflags",
        "os.lchflags",
        "os.lchmod",
        "os.chdir",
    )
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
            if event in ("os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.utime") and not (
                args[-1] is None or args[-1] < 0
            ):
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
    if job["drop"]:
        uid, gid = job["drop"]
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    if job["rlimits"]:
        _child_limits(job)
    temp = os.path.realpath(os.getcwd())
    paths = sysconfig.get_paths()
    roots = {
        os.path.realpath(p)
        for p in (
            sys.prefix,
            sys.base_prefix,
            sys.exec_prefix,
            sys.base_exec_prefix,
            paths["stdlib"],
            paths["platstdlib"],
            paths["purelib"],
            paths["platlib"],
        )
    }
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
    nonce, report_fd, mode, hooked = job.pop("nonce", ""), job["report_fd"], job["mode"], job["hook"]
    namespace = {"__name__": "__main__" if mode == "run" else "solution", "__builtins__": builtins}
    solution = job.pop("code")
    for name in ("_child_limits", "_child_hook", "_child_main"):
        globals().pop(name, None)
    del job, paths
    if hooked:
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
