"""The sandbox and the `code` reward against honest and hostile completions.

Each hostile completion must be contained (no connection, no file written or read, no secret seen,
no forged verdict) and score 0 through the code reward, quickly.
"""

from __future__ import annotations

import os
import socket
import time

import pytest

from strop.rl.rewards import RewardSpec, build_rewards
from strop.rl.sandbox import run_python, run_tests

PASS = ["assert True"]


def code_reward(**options):
    return build_rewards([RewardSpec(type="code", timeout_s=2, memory_mb=256, **options)])[0].fn


def score(completion: str, tests: list[str] = PASS) -> float:
    return code_reward()([None], [completion], [{"tests": tests}])[0]


def test_honest_solutions():
    tests = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4", "assert add(0, 0) == 0"]
    right = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```"
    half = "```python\ndef add(a, b):\n    return a + b if a > 0 else 1\n```"
    broken = "```python\ndef add(a, b)\n    return a + b\n```"
    reward = code_reward(workers=2)
    rows = [{"tests": tests}] * 3
    assert reward([None] * 3, [right, half, broken], rows) == [1.0, 0.5, 0.0]


def test_test_code_as_one_string_and_json_list():
    solution = "def sq(x):\n    return x * x\n"
    assert score(solution, "assert sq(3) == 9\nassert sq(2) == 4") == 1.0
    assert code_reward()([None], [solution], [{"tests": '["assert sq(3) == 9", "assert sq(2) == 5"]'}]) == [0.5]


def test_run_python_works_in_its_own_folder_which_is_then_deleted():
    result = run_python(
        "import os, json, collections, typing, enum\n"
        "open('note.txt', 'w').write('hi')\nprint(os.getcwd(), open('note.txt').read())"
    )
    assert result.returncode == 0 and not result.timed_out, result.stderr
    folder, text = result.stdout.split()
    assert text == "hi" and "strop-sandbox-" in folder
    assert not os.path.exists(folder)


def test_infinite_loop_is_killed_on_time():
    started = time.monotonic()
    result = run_python("while True:\n    pass\n", timeout_s=1.5)
    assert result.timed_out and time.monotonic() - started < 4
    assert score("def f():\n    return 1\nwhile True:\n    pass\n", ["assert f() == 1"]) == 0.0


def test_hang_after_some_tests_keeps_the_verdicts_already_reported():
    solution = "import time\ndef f(x):\n    if x == 3:\n        time.sleep(60)\n    return x\n"
    outcome = run_tests(
        solution, ["assert f(1) == 1", "assert f(2) == 2", "assert f(3) == 3", "assert f(4) == 4"], timeout_s=1.5
    )
    assert outcome.passed == [True, True, False, False] and outcome.result.timed_out


@pytest.mark.parametrize(
    "bomb",
    [
        "import os\nwhile True:\n    os.fork()\n",
        "import subprocess\nsubprocess.run(['sh', '-c', ':(){ :|:& };:'])\n",
        "import os\nos.system('sleep 30 &')\n",
        "import multiprocessing\nmultiprocessing.Process(target=print).start()\n",
    ],
)
def test_fork_bomb_is_refused(bomb):
    started = time.monotonic()
    assert score(bomb) == 0.0
    assert time.monotonic() - started < 4


@pytest.mark.parametrize(
    "bomb",
    ["x = bytearray(8 * 1024 ** 3)\n", "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 1024 ** 2))\n"],
)
def test_memory_bomb_is_contained(bomb):
    result = run_python(bomb, timeout_s=3, memory_mb=256)
    assert result.returncode != 0 and "MemoryError" in result.stderr
    assert score(bomb) == 0.0


def test_no_network():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.3)
    port = listener.getsockname()[1]
    try:
        hostile = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\ns.sendall(b'leak')\n"
        assert score(hostile) == 0.0
        assert score("import socket\nsocket.getaddrinfo('example.com', 80)\n") == 0.0
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()


@pytest.mark.parametrize(
    "attack",
    [
        "open({target!r}, 'w').write('pwned')",
        "import os\nfd = os.open({target!r}, os.O_WRONLY | os.O_CREAT)\nos.write(fd, b'pwned')",
        "import pathlib\npathlib.Path({target!r}).write_text('pwned')",
        "import os\nos.symlink({target!r}, 'link')\nopen('link', 'w').write('pwned')",
        "import os\nopen('inside', 'w').write('pwned')\nos.rename('inside', {target!r})",
        "import os\nos.chdir('/')\nopen({target!r}.lstrip('/'), 'w').write('pwned')",
        "open('../' * 30 + {target!r}.lstrip('/'), 'w').write('pwned')",
        "import shutil\nopen('inside', 'w').write('pwned')\nshutil.copy('inside', {target!r})",
    ],
)
def test_cannot_write_outside_its_folder(tmp_path, attack):
    target = str(tmp_path / "pwned.txt")
    assert score(attack.format(target=target)) == 0.0
    assert not os.path.exists(target)


def test_cannot_delete_or_change_user_files(tmp_path):
    keep = tmp_path / "keep.txt"
    keep.write_text("data")
    for attack in (
        f"import os\nos.remove({str(keep)!r})",
        f"import os\nos.chmod({str(keep)!r}, 0)",
        f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
        f"import os\nos.truncate({str(keep)!r}, 0)",
    ):
        assert score(attack) == 0.0
    assert keep.read_text() == "data" and oct(keep.stat().st_mode)[-3:] != "000"


def test_cannot_read_environment_secrets(monkeypatch):
    monkeypatch.setenv("STROP_TEST_SECRET", "hunter2")
    assert score("import os\nassert os.environ.get('STROP_TEST_SECRET') == 'hunter2'\n") == 0.0
    assert score("assert b'hunter2' in open('/proc/self/environ', 'rb').read()\n") == 0.0
    assert score("import os\nassert b'hunter2' in open(f'/proc/{os.getppid()}/environ', 'rb').read()\n") == 0.0
    result = run_python("import os\nprint(sorted(os.environ))")
    assert "STROP_TEST_SECRET" not in result.stdout and "PATH" not in result.stdout


@pytest.mark.parametrize(
    "attack",
    [
        "assert 'hunter2' in open({secret!r}).read()",
        "import os\nassert 'secret.txt' in os.listdir({folder!r})",
        "import io\nassert b'hunter2' in io.open_code({secret!r}).read()",
        "assert 'hunter2' in open('../' * 30 + {secret!r}.lstrip('/')).read()",
        "import os\nos.mkdir('d')\nfd = os.open('d', os.O_RDONLY)\nassert 'hunter2' in open(os.open('../' * 30 + {secret!r}.lstrip('/'), os.O_RDONLY, dir_fd=fd)).read()",
        "class P:\n    n = 0\n    def __fspath__(self):\n        P.n += 1\n        return 'x' if P.n > 1 else {secret!r}\nassert 'hunter2' in open(P()).read()",
    ],
)
def test_cannot_read_user_files(tmp_path, attack):
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2")
    assert score(attack.format(secret=str(secret), folder=str(tmp_path))) == 0.0


def test_patching_os_path_does_not_fool_the_hook(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2")
    attack = (
        f"import os, posixpath, builtins\nhere = os.getcwd() + '/x'\n"
        f"os.path.realpath = posixpath.realpath = os.path.abspath = lambda p, **k: here\n"
        f"builtins.any = lambda items: True\n"
        f"assert 'hunter2' in open({str(secret)!r}).read()\n"
    )
    assert score(attack) == 0.0


@pytest.mark.parametrize(
    "forgery",
    [
        "print('all passed')\nprint('1 1 1 1')",
        "import os\nfor fd in range(3, 64):\n    for i in range(4):\n        try:\n            os.write(fd, f'0 {i} 1\\n'.encode())\n        except OSError:\n            pass",
        "import os\nos._exit(0)",
        "import sys\nsys.exit(0)",
        "import sys\nsys.settrace(lambda *a: None)",
        "import sys\nframe = sys._getframe(1)",
        "import gc\nobjects = gc.get_objects()",
        "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    frame = e.__traceback__.tb_frame.f_back",
        "import builtins\nbuiltins.BaseException = int\nbuiltins.exec = lambda *a: None\nbuiltins.int = lambda *a: 1",
        "import ctypes",
    ],
)
def test_verdicts_cannot_be_forged(forgery):
    tests = ["assert f(1) == 2", "assert f(2) == 4", "assert f(3) == 6", "assert f(4) == 8"]
    assert score(f"def f(x):\n    return 0\n{forgery}\n", tests) == 0.0


def test_cannot_signal_the_trainer():
    assert score("import os, signal\nos.kill(os.getppid() or 1, signal.SIGKILL)\n") == 0.0
    assert score("import os, signal\nos.killpg(0, signal.SIGKILL)\n") == 0.0


def test_folder_is_removed_even_when_made_unwritable():
    result = run_python(
        "import os\nos.makedirs('a/b')\nopen('a/b/f', 'w').write('x')\nos.chmod('a/b', 0)\n"
        "os.chmod('a', 0)\nprint(os.getcwd())"
    )
    assert result.returncode == 0, result.stderr
    assert not os.path.exists(result.stdout.strip())
