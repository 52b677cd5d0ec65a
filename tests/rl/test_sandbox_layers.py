"""Each isolation layer of the sandbox on its own (the others switched off), and the strict/relaxed switch.

A layer's test runs code that the layer must stop with every other layer off, so it fails if that
layer alone does not hold; where it is cheap, a control run without the layer shows the attack works.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from strop.rl.rewards import RewardSpec, build_rewards
from strop.rl.sandbox import Layers, SandboxUnavailable, SandboxWarning, isolation, run_python, run_tests

OFF = Layers(namespaces=False, drop_user=False, seccomp=False, cgroup=False, audit_hook=False, rlimits=False)
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="this layer is set up only when strop runs as root")


def only(**layers) -> Layers:
    return Layers(**{**OFF.__dict__, **layers})


def lines(result) -> list[str]:
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@as_root
def test_drop_user_alone_leaves_an_unused_uid_without_groups_or_capabilities():
    code = (
        "import os\nprint(os.getresuid(), os.getresgid(), os.getgroups())\n"
        "status = dict(l.split(':', 1) for l in open('/proc/self/status'))\n"
        "print(*(int(status[k], 16) for k in ('CapEff', 'CapPrm', 'CapAmb')))\n"
    )
    ids, caps = lines(run_python(code, layers=only(namespaces=True, drop_user=True)))
    uid, gid = isolation.unused_ids()
    assert ids == f"({uid}, {uid}, {uid}) ({gid}, {gid}, {gid}) []"
    assert caps == "0 0 0"


def test_namespaces_alone_show_a_minimal_read_only_root_and_nothing_of_the_host(tmp_path):
    (tmp_path / "secret.txt").write_text("hunter2")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    code = (
        f"import os, socket\nprint(sorted(p for p in os.listdir('/proc') if p.isdigit()))\n"
        f"print(os.uname().nodename, [name for _, name in socket.if_nameindex()])\n"
        f"print(os.path.exists('/etc'), os.path.exists('/home'), os.path.exists({str(tmp_path)!r}))\n"
        f"try:\n    socket.create_connection(('127.0.0.1', {listener.getsockname()[1]}), timeout=1)\n"
        f"except OSError as error:\n    print(error.errno)\n"
        f"try:\n    open('/new', 'w')\nexcept OSError as error:\n    print(error.errno)\n"
        f"stats = os.statvfs('.')\nprint(stats.f_blocks * stats.f_frsize)\n"
    )
    try:
        pids, names, visible, connect, write, size = lines(run_python(code, file_mb=4, layers=only(namespaces=True)))
    finally:
        listener.close()
    assert pids in ("['1', '2']", "['1']") and names == "sandbox ['lo']"
    assert visible == "False False False"
    assert int(connect) in (101, 111) and int(write) == 30  # ENETUNREACH/ECONNREFUSED; EROFS
    assert int(size) == 4 * 1024 * 1024


SYSCALLS_X86_64 = {
    "ptrace": (101, 0x4206, 1, 0, 0),
    "process_vm_readv": (310, 1, 0, 0, 0, 0, 0),
    "mount": (165, 0, 0, 0, 0, 0),
    "keyctl": (250, 0),
    "bpf": (321, 0, 0, 0),
    "perf_event_open": (298, 0, 0, 0, 0, 0),
    "unshare": (272, 0x20000),
    "fork": (57,),
    "socket_inet": (41, 2, 1, 0),
}


@pytest.mark.skipif(platform.machine() != "x86_64", reason="raw system call numbers of x86_64")
def test_seccomp_alone_refuses_the_deny_list_to_native_calls():
    code = (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.syscall.restype = ctypes.c_long\n"
        f"for name, args in {SYSCALLS_X86_64!r}.items():\n    result = libc.syscall(*args)\n"
        "    if result == 0 and name == 'fork':\n        os._exit(0)\n"
        "    print(name, ctypes.get_errno() if result < 0 else 'allowed')\n"
        "print('Seccomp', open('/proc/self/status').read().split('Seccomp:')[1].split()[0])\n"
    )
    refused = dict(line.split() for line in lines(run_python(code, layers=only(namespaces=True, seccomp=True))))
    assert refused.pop("Seccomp") == "2"
    assert refused.pop("socket_inet") == "97"  # EAFNOSUPPORT
    assert refused == {name: "1" for name in refused}  # EPERM
    control = dict(line.split() for line in lines(run_python(code, layers=only(namespaces=True))))
    assert control["fork"] == control["socket_inet"] == "allowed" and control["Seccomp"] == "0"
    x32 = "import ctypes\nctypes.CDLL(None).syscall(0x40000000 | 39)\nprint('survived')\n"  # getpid, x32 ABI
    killed = run_python(x32, layers=only(namespaces=True, seccomp=True))
    assert killed.returncode != 0 and "survived" not in killed.stdout
    assert lines(run_python(x32, layers=only(namespaces=True))) == ["survived"]


def test_rlimits_alone():
    code = (
        "import resource\nfor name in ('AS', 'CPU', 'FSIZE', 'NOFILE', 'CORE', 'NPROC'):\n"
        "    print(name, *resource.getrlimit(getattr(resource, 'RLIMIT_' + name)))\n"
    )
    limits = lines(run_python(code, timeout_s=2, memory_mb=128, file_mb=2, layers=only(rlimits=True)))
    assert limits == [
        f"AS {128 << 20} {128 << 20}",
        "CPU 3 3",
        f"FSIZE {2 << 20} {2 << 20}",
        "NOFILE 64 64",
        "CORE 0 0",
        "NPROC 0 0",
    ]
    bomb = run_python("x = bytearray(1024 ** 3)\n", memory_mb=128, layers=only(rlimits=True))
    assert "MemoryError" in bomb.stderr


FORK_COUNT = (
    "import os, time\ncount = 0\nfor _ in range(200):\n    try:\n        pid = os.fork()\n"
    "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n"
    "    count += 1\nprint(count)\n"
)


@as_root
@pytest.mark.skipif(isolation.pids_hierarchy() is None, reason="no writable cgroup hierarchy with the pids controller")
def test_cgroup_alone_bounds_a_fork_bomb_even_as_root():
    bounded = lines(run_python(FORK_COUNT, layers=only(namespaces=True, cgroup=True)))
    unbounded = lines(run_python(FORK_COUNT, layers=only(namespaces=True)))
    assert int(bounded[0]) < isolation.CGROUP_PIDS_MAX and unbounded == ["200"]
    root = isolation.pids_hierarchy()
    assert not [name for name in os.listdir(root) if name.startswith("strop-sandbox-")]


GRANDCHILD = """import os, re
def f(x):
    return 0
if os.fork() == 0:
    found = set()
    for pid in (os.getppid(), {trainer}):
        try:
            mem = open(f'/proc/{{pid}}/mem', 'rb')
            for line in open(f'/proc/{{pid}}/maps'):
                span, perms = line.split()[:2]
                if perms.startswith('rw'):
                    start, end = (int(x, 16) for x in span.split('-'))
                    mem.seek(start)
                    found.update(re.findall(rb'[0-9a-f]{{32}}', mem.read(end - start)))
        except (OSError, ValueError, OverflowError):
            pass
    for fd in range(3, 1024):
        for nonce in found:
            for index in range(3):
                try:
                    os.write(fd, nonce + f' {{index}} 1\\n'.encode())
                except OSError:
                    pass
    os._exit(0)
os.wait()
os._exit(0)  # before the runner reports: the forged lines would be the only ones
"""


@as_root
def test_a_grandchild_cannot_read_the_nonce_from_memory():
    """It runs under the unused uid (the child's memory is closed to it) in another PID namespace (the
    trainer is not there); the control without the uid drop shows the attack itself works."""
    code, tests = GRANDCHILD.format(trainer=os.getpid()), ["assert f(1) == 2", "assert f(2) == 4", "assert f(3) == 6"]
    forked = only(namespaces=True, drop_user=True, rlimits=False)
    assert run_tests(code, tests, layers=forked).passed == [False] * 3
    assert run_tests(code, tests, layers=only(namespaces=True)).passed == [True] * 3


def test_the_audit_hook_alone_contains_the_basics(tmp_path):
    """Where no operating-system layer works (relaxed mode) the hook still refuses network, processes, files."""
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.3)
    hook = only(audit_hook=True, rlimits=True)
    try:
        port = listener.getsockname()[1]
        for attack in (
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)",
            "import os\nos.fork()",
            f"open({str(secret)!r}).read()",
            f"open({str(tmp_path / 'pwned.txt')!r}, 'w').write('x')",
        ):
            assert run_tests(attack, ["assert True"], layers=hook).passed == [False]
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()
    assert not (tmp_path / "pwned.txt").exists()
    assert run_tests("def f():\n    return 1\n", ["assert f() == 1"], layers=hook).passed == [True]


@pytest.fixture
def no_bubblewrap(monkeypatch):
    monkeypatch.setattr(
        isolation, "namespaces_unavailable", lambda: f"bubblewrap (bwrap) is not installed; {isolation.INSTALL_BWRAP}"
    )


def test_strict_mode_refuses_and_says_what_to_install(no_bubblewrap):
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        run_python("print(1)")
    with pytest.raises(SandboxUnavailable, match="namespaces: bubblewrap"):
        build_rewards([RewardSpec(type="code")])


def test_relaxed_mode_warns_and_runs_with_what_works(no_bubblewrap):
    with pytest.warns(SandboxWarning, match="namespaces: bubblewrap .* relaxed"):
        reward = build_rewards([RewardSpec(type="code", sandbox="relaxed")])[0].fn
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert reward([None], ["def f():\n    return 1\n"], [{"tests": ["assert f() == 1"]}]) == [1.0]
    assert run_python("print(1)", sandbox="relaxed").stdout == "1\n"


def test_sandbox_option_is_validated():
    with pytest.raises(ValueError, match="sandbox"):
        RewardSpec(type="code", sandbox="off")


def _readable_to_others(needed: list[str]) -> list[str]:
    """bubblewrap arguments that make `needed` reachable to any user in a private mount namespace: each
    closed folder above one of them (as /root is) becomes an empty tmpfs with those paths bound back."""
    command, blockers = [], {}
    for path in needed:
        parts = path.split("/")
        for depth in range(2, len(parts) + 1):
            ancestor = "/".join(parts[:depth])
            if not os.stat(ancestor).st_mode & 0o001:
                blockers.setdefault(ancestor, []).append(path)
                break
    for blocker, paths in blockers.items():
        command += ["--perms", "0755", "--tmpfs", blocker]
        for path in paths:
            parts = path.split("/")
            for depth in range(blocker.count("/") + 2, len(parts)):
                command += ["--perms", "0755", "--dir", "/".join(parts[:depth])]
            command += ["--ro-bind", path, path]
    return command


@as_root
@pytest.mark.slow
def test_every_hostile_case_scores_0_as_an_ordinary_user():
    """The whole hostile suite again, from a trainer that is not root: bubblewrap then makes a user
    namespace, and no uid drop or cgroup is there to help."""
    repo = Path(__file__).resolve().parents[2]
    needed = sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, repo)})
    user = isolation.unused_ids()[0] - 1000
    command = [
        "bwrap",
        "--dev-bind",
        "/",
        "/",
        *_readable_to_others(needed),
        "--die-with-parent",
        "--",
        "setpriv",
        f"--reuid={user}",
        f"--regid={user}",
        "--clear-groups",
        "--",
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        str(repo / "tests/rl/test_sandbox_hostile.py"),
    ]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/tmp",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": str(repo / "src"),
    }
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd="/tmp")
    assert run.returncode == 0 and run.stdout.splitlines()[-1].startswith("53 passed"), (
        run.stdout[-3000:] + run.stderr[-2000:]
    )
