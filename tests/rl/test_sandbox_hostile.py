"""Hostile completions against the `code` reward with every isolation layer on, grouped by what they attack.

Each completion succeeds only if its attack does (it raises otherwise, and its test then fails), so a
score of 0 means the attack was refused. After each case the `host` fixture checks that nothing
happened outside the sandbox: the watched folder (a secret file, a file to keep) is byte-for-byte
unchanged, no process of the sandbox's user is alive and no sandbox cgroup is left. Native attacks load
a C extension module (sandbox_native.c, compiled once by gcc) straight from its file with
`ExtensionFileLoader`: no import event reaches the audit hook, so only the operating system stops them.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import sysconfig
import time
from pathlib import Path

import pytest

from strop.rl.rewards import RewardSpec, build_rewards
from strop.rl.sandbox import isolation

SECRET = "hunter2-strop-13"
NATIVE_SOURCE = Path(__file__).with_name("sandbox_native.c")
LOADER = """import base64, importlib.machinery, importlib.util
open('hostile.so', 'wb').write(base64.b64decode({blob!r}))
loader = importlib.machinery.ExtensionFileLoader('hostile', 'hostile.so')
native = importlib.util.module_from_spec(importlib.util.spec_from_file_location('hostile', 'hostile.so', loader=loader))
loader.exec_module(native)
"""


@pytest.fixture(scope="session")
def native(tmp_path_factory) -> str:
    """Python source that writes the compiled module into the sandbox folder and loads it as `native`."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.fail("the hostile suite needs a C compiler (apt-get install gcc)")
    built = tmp_path_factory.mktemp("native") / "hostile.so"
    subprocess.run(
        [
            gcc,
            "-shared",
            "-fPIC",
            "-O1",
            "-s",
            f"-I{sysconfig.get_paths()['include']}",
            str(NATIVE_SOURCE),
            "-o",
            str(built),
        ],
        check=True,
    )
    return LOADER.format(blob=base64.b64encode(built.read_bytes()).decode())


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): (
            os.readlink(p).encode() if p.is_symlink() else p.read_bytes() if p.is_file() else b"<dir>"
        )
        for p in sorted(folder.rglob("*"))
    }


def _sandbox_processes() -> list[str]:
    uid = str(isolation.unused_ids()[0])
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if any(line.startswith("Uid:") and uid in line.split() for line in status.splitlines()):
            found.append(pid)
    return found


def _leftover_cgroups() -> list[str]:
    root = isolation.pids_hierarchy()
    return [name for name in os.listdir(root) if name.startswith("strop-sandbox-")] if root else []


@pytest.fixture
def host(tmp_path, monkeypatch):
    """The trainer's side: a secret in its environment and in a file, and a file to keep; checked afterwards."""
    monkeypatch.setenv("STROP_TEST_SECRET", SECRET)
    (tmp_path / "secret.txt").write_text(SECRET)
    (tmp_path / "keep.txt").write_text("data")
    before = _snapshot(tmp_path)
    yield tmp_path
    assert _snapshot(tmp_path) == before
    assert not _sandbox_processes()
    assert not _leftover_cgroups()


@pytest.fixture
def listener():
    """A TCP listener on the host's loopback; the case must not reach it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    yield server.getsockname()[1]
    try:
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()


def score(code: str, tests: tuple[str, ...] = ("assert True",), timeout_s: float = 2) -> float:
    reward = build_rewards([RewardSpec(type="code", timeout_s=timeout_s, memory_mb=256)])[0].fn
    return reward([None], [code], [{"tests": list(tests)}])[0]


def attack(case: str, host: Path, native: str, **extra) -> str:
    code = case.replace("@NATIVE@\n", native).replace("@HOST@", str(host)).replace("@PID@", str(os.getpid()))
    for key, value in extra.items():
        code = code.replace(f"@{key.upper()}@", str(value))
    return code


PROCESSES = {
    "fork_loop": "import os\nwhile True:\n    os.fork()\n",
    "subprocess_shell": "import subprocess\nassert subprocess.run(['/bin/sh', '-c', 'true']).returncode == 0\n",
    "os_system": "import os\nassert os.system('true') == 0\n",
    "multiprocessing": "import multiprocessing\np = multiprocessing.Process(target=print)\np.start()\np.join()\n"
    "assert p.exitcode == 0\n",
    "posix_spawn": "import os\npid = os.posix_spawn('/bin/sh', ['sh', '-c', 'true'], {})\nassert os.waitpid(pid, 0)[1] == 0\n",
    "pty_spawn": "import pty\nassert pty.spawn(['/bin/sh', '-c', 'true']) == 0\n",
    "exec_interpreter": "import os, sys\nos.execv(sys.executable, [sys.executable, '-c', 'pass'])\n",
    "native_system": "@NATIVE@\nassert native.system(b'id > proof.txt') == 0\n",
    "native_fork_exec_shell": "@NATIVE@\nassert native.spawn(b'/bin/sh') == 0\n",
    "native_fork_exec_python": "@NATIVE@\nimport sys\nassert native.spawn(sys.executable.encode()) in (0, 1, 2)\n",
    "native_raw_clone": "@NATIVE@\npid = native.syscall(56, 17, 0, 0, 0, 0)\nif pid == 0:\n    native.syscall(60, 0)\n"
    "assert pid > 0\n",
}


@pytest.mark.parametrize("case", PROCESSES.values(), ids=PROCESSES.keys())
def test_process_creation(case, host, native):
    assert score(attack(case, host, native)) == 0.0


SECRETS = {
    "environment": "import os\nassert os.environ['STROP_TEST_SECRET']\n",
    "own_environ": "assert b'@SECRET@' in open('/proc/self/environ', 'rb').read()\n",
    "parent_environ": "import os\nassert b'@SECRET@' in open(f'/proc/{os.getppid()}/environ', 'rb').read()\n",
    "native_trainer_environ": "@NATIVE@\nassert b'@SECRET@' in native.read(b'/proc/@PID@/environ')\n",
    "native_every_environ": "@NATIVE@\nimport os\nfound = [p for p in os.listdir('/proc') if p.isdigit()\n"
    "         and b'@SECRET@' in (lambda r: r if isinstance(r, bytes) else b'')"
    "(native.read(f'/proc/{p}/environ'.encode()))]\nassert found\n",
    "shadow": "assert 'root:' in open('/etc/shadow').read()\n",
    "passwd_stdlib": "import pwd\nassert pwd.getpwnam('root').pw_uid == 0\n",
    "native_shadow": "@NATIVE@\nassert native.read(b'/etc/shadow').startswith(b'root:')\n",
    "native_passwd": "@NATIVE@\nassert native.read(b'/etc/passwd').startswith(b'root:')\n",
    "native_secret_file": "@NATIVE@\nassert native.read(b'@HOST@/secret.txt') == b'@SECRET@'\n",
}


@pytest.mark.parametrize("case", SECRETS.values(), ids=SECRETS.keys())
def test_reading_secrets(case, host, native):
    assert score(attack(case, host, native, secret=SECRET)) == 0.0


FILES = {
    "write": "open('@HOST@/pwned.txt', 'w').write('pwned')\n",
    "native_write": "@NATIVE@\nassert native.write(b'@HOST@/pwned.txt', b'pwned') == 5\n",
    "native_overwrite": "@NATIVE@\nassert native.write(b'@HOST@/keep.txt', b'gone') == 4\n",
    "native_root_write": "@NATIVE@\nassert native.write(b'/pwned.txt', b'pwned') == 5\n",
    "native_unlink": "@NATIVE@\nassert native.syscall(87, id(b'@HOST@/keep.txt') + 32) == 0\n",
    "native_mount": "@NATIVE@\nimport os\nos.mkdir('m')\nargs = (b'none', b'm', b'tmpfs')\n"
    "assert native.syscall(165, *(id(a) + 32 for a in args), 0, 0) == 0\n",
    "native_chroot": "@NATIVE@\nassert native.syscall(161, id(b'.') + 32) == 0\n",
    "native_read_source_tree": f'@NATIVE@\nassert native.read({str(Path(__file__).resolve()).encode()!r})[:3] == b\'"""\'\n',
}


@pytest.mark.parametrize("case", FILES.values(), ids=FILES.keys())
def test_files_outside_the_folder(case, host, native):
    assert score(attack(case, host, native)) == 0.0


NETWORK = {
    "tcp": "import socket\nsocket.create_connection(('127.0.0.1', @PORT@), timeout=1).sendall(b'leak')\n",
    "dns": "import socket\nassert socket.getaddrinfo('localhost', 80)\n",
    "native_tcp": "@NATIVE@\nassert native.connect(@PORT@) == 0\n",
    "native_netlink": "@NATIVE@\nassert native.syscall(41, 16, 3, 0) >= 0\n",
    "native_packet": "@NATIVE@\nassert native.syscall(41, 17, 3, 0) >= 0\n",
    "native_unix_host_path": "@NATIVE@\nassert native.unix(b'@HOST@/trainer.sock') == 0\n",
    "native_unix_abstract": "@NATIVE@\nassert native.unix(b'\\0@ABSTRACT@') == 0\n",
}


@pytest.mark.parametrize("case", NETWORK.values(), ids=NETWORK.keys())
def test_network(case, host, native, listener):
    abstract, path = socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)
    name = f"strop-test-{os.getpid()}"
    abstract.bind("\0" + name)
    path.bind(str(host / "trainer.sock"))
    for server in (abstract, path):
        server.listen(1)
        server.settimeout(0.1)
    try:
        assert score(attack(case, host, native, port=listener, abstract=name)) == 0.0
        for server in (abstract, path):
            with pytest.raises(socket.timeout):
                server.accept()
    finally:
        abstract.close()
        path.close()
        (host / "trainer.sock").unlink()


RESOURCES = {
    "memory_at_once": "x = bytearray(8 * 1024 ** 3)\n",
    "memory_growing": "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 1024 ** 2))\n",
    "threads": "import threading, time\nfor _ in range(1000):\n    threading.Thread(target=time.sleep, args=(5,)).start()\n",
    "disk_one_file": "with open('big', 'wb') as f:\n    while True:\n        f.write(b'x' * 1024 ** 2)\n",
    "disk_many_files": "for i in range(10 ** 6):\n    open(f'f{i}', 'wb').write(b'x' * 1024 ** 2)\n",
    "open_files": "handles = [open(f'h{i}', 'w') for i in range(10000)]\n",
    "native_fork_bomb": "@NATIVE@\nwhile True:\n    assert native.syscall(57) >= 0\n",
}


@pytest.mark.parametrize("case", RESOURCES.values(), ids=RESOURCES.keys())
def test_resource_exhaustion(case, host, native):
    started = time.monotonic()
    assert score(attack(case, host, native)) == 0.0
    assert time.monotonic() - started < 6


VERDICT_TESTS = ("assert f(1) == 2", "assert f(2) == 4", "assert f(3) == 6")
FORGERIES = {
    "print_results": "print('0 0 1\\n0 1 1\\n0 2 1')\n",
    "write_every_fd": "import os\nfor fd in range(3, 64):\n    for i in range(3):\n        try:\n"
    "            os.write(fd, f'0 {i} 1\\n'.encode())\n        except OSError:\n            pass\n",
    "native_write_every_fd": "@NATIVE@\nfor fd in range(3, 64):\n    for i in range(3):\n"
    "        native.syscall(1, fd, id(f'x {i} 1\\n'.encode()) + 32, 6)\n",
    "exit_early": "import os\nos._exit(0)\n",
    "patch_builtins": "import builtins\nbuiltins.BaseException = int\nbuiltins.exec = lambda *a: None\n",
}


@pytest.mark.parametrize("case", FORGERIES.values(), ids=FORGERIES.keys())
def test_forged_verdicts(case, host, native):
    assert score("def f(x):\n    return 0\n" + attack(case, host, native), VERDICT_TESTS) == 0.0


TIME = {
    "busy_loop": "while True:\n    pass\n",
    "sleep": "import time\ntime.sleep(60)\n",
    "ignore_signals": "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):\n"
    "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass\n",
    "new_session": "import os\nos.setsid()\nwhile True:\n    pass\n",
    "native_sleep": "@NATIVE@\nnative.syscall(35, id(b'\\x3c' + bytes(15)) + 32, 0)\n",
}


@pytest.mark.parametrize("case", TIME.values(), ids=TIME.keys())
def test_escaping_the_time_limit(case, host, native):
    started = time.monotonic()
    assert score("def f():\n    return 1\n" + attack(case, host, native), ("assert f() == 1",), timeout_s=1.5) == 0.0
    assert time.monotonic() - started < 5
