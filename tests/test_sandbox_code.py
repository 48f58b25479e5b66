"""The code sandbox (align/rewards/sandbox.py), through the code reward's checker (align/rewards/code.py),
against hostile programs: each gets its status within its limit, none passes, nothing survives the run (no process with a sandbox uid, no file outside
the removed temp dir), and this test process is unharmed. Short limits keep the file fast."""

from __future__ import annotations

import glob
import itertools
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from align.rewards import sandbox
from align.rewards.code import run_tests as run_program
from align.rewards.code import run_tests_many as run_many
from align.rewards.sandbox import Limits

pytestmark = pytest.mark.skipif(sandbox.sandbox_unavailable() is not None,
                                reason=str(sandbox.sandbox_unavailable()))

LIMITS = Limits(cpu_s=2, wall_s=3.0, memory_mb=256, nproc=16, file_mb=1, nofile=64)
REPO = Path(__file__).resolve().parents[1]
HOST_PATHS = [str(REPO), str(REPO / "runs"), "/home", "/work", "/root/.cache", tempfile.gettempdir() + "/pytest-of-root",
              str(sandbox.UID_LOCKS)]
TOK = secrets.token_hex(4)
TESTS = ["assert f(2) == 4", "assert f(5) == 10"]
CORRECT = "def f(x):\n    return 2 * x\n"
WRONG = "def f(x):\n    return x + 1\n"  # f(2) == 3


def _sandbox_pids() -> list[int]:
    """Processes whose real uid is in the sandbox's uid range."""
    pids = []
    for status in glob.glob("/proc/[0-9]*/status"):
        try:
            uid_line = next(line for line in Path(status).read_text().splitlines() if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue  # the process exited while being read
        if int(uid_line.split()[1]) >= sandbox.UID_BASE:
            pids.append(int(status.split("/")[2]))
    return pids


@pytest.fixture
def listener():
    """A TCP listener on 127.0.0.1 that the sandbox must NOT reach."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0.2)
    yield srv
    srv.close()


HOSTILE = {
    # name: (program, allowed statuses, wall limit for the run)
    "infinite_loop": ("while True:\n    pass\n", {"timeout"}, 4.0),
    "fork_bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
                  {"timeout", "violation"}, 4.0),
    "memory_bomb": ("x = bytearray(4 * 1024 ** 3)\n" + CORRECT, {"violation"}, 4.0),
    "memory_creep": ("chunks = []\nwhile True:\n    chunks.append(b'x' * 10 ** 7)\n", {"violation"}, 4.0),
    "gigabyte_output": ("import sys\nfor _ in range(1000):\n    sys.stdout.write('x' * 10 ** 6)\n" + CORRECT,
                        {"violation"}, 4.0),
    "deep_recursion": ("def r(n):\n    return r(n + 1)\nr(0)\n" + CORRECT, {"error"}, 4.0),
    "c_stack_overflow": ("import sys\nsys.setrecursionlimit(10 ** 8)\ndef r(n):\n    return r(n + 1)\nr(0)\n",
                         {"error", "violation", "timeout"}, 4.0),
    "write_root": (f"open('/root/pwned-{TOK}', 'w').write('x')\n" + CORRECT, {"violation"}, 4.0),
    # refused (read-only checkout: violation), or, for a checkout under /tmp, not even visible inside the
    # sandbox's private /tmp (FileNotFoundError: error); never written, never a pass
    "write_repo": (f"open('{Path(__file__).parent}/pwned-{TOK}', 'w').write('x')\n" + CORRECT,
                   {"violation", "error"}, 4.0),
    # /tmp is a private tmpfs: the write succeeds in there, vanishes with it; f is wrong.
    "write_tmp": (f"open('/tmp/pwned-{TOK}', 'w').write('x')\n" + WRONG, {"fail"}, 4.0),
    # f is right only if the token is visible (env, /proc, root's HF cache): must fail.
    "read_hf_token": ("import os, glob\n"
                      "seen = os.environ.get('HF_TOKEN', '')\n"
                      "for p in glob.glob('/proc/*/environ'):\n"
                      "    try:\n        seen += open(p, 'rb').read().decode('latin1')\n"
                      "    except OSError:\n        pass\n"
                      "for p in glob.glob('/root/.cache/huggingface/token'):\n    seen += open(p).read()\n"
                      f"def f(x):\n    return 2 * x if 'hf-secret-{TOK}' in seen else -1\n", {"fail"}, 4.0),
    "socket_outside": ("import socket\nsocket.create_connection(('203.0.113.1', 80), timeout=1)\n" + CORRECT,
                       {"violation"}, 4.0),
    "kill_parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"
                    f"os.kill({os.getpid()}, signal.SIGKILL)\n" + CORRECT, {"violation", "error"}, 4.0),
        # kill(-1): nothing this uid may signal is visible, so ESRCH.
    "kill_everything": ("import os, signal\nos.kill(-1, signal.SIGKILL)\n" + CORRECT, {"error"}, 4.0),
    "segfault": ("import ctypes\nctypes.string_at(0)\n" + CORRECT, {"error"}, 4.0),
    "sleep_past_timeout": ("import time\ntime.sleep(100)\n" + CORRECT, {"timeout"}, 4.0),
    "daemon": ("import os, time\n"
               "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
               f"        time.sleep(1.5)\n        open('/tmp/work/late-{TOK}', 'w').write('alive')\n"
               "        time.sleep(60)\n    os._exit(0)\n" + WRONG, {"fail"}, 4.0),
    "exit_before_asserts": ("import sys\nsys.exit(0)\n" + WRONG, {"error"}, 4.0),
    "os_exit_before_asserts": ("import os\n" + WRONG + "os._exit(0)\n", {"error"}, 4.0),
    "patch_builtins": ("import builtins, sys, os\n"
                       "builtins.AssertionError = type('Nope', (Exception,), {})\n"
                       "builtins.len = lambda x: 3\n"
                       "sys.exit = lambda *a: None\nos._exit = lambda *a: None\n"
                       "def f(x):\n    return []\n", {"fail"}, 4.0),
    # Directories nested past Python's recursion limit in the work dir: they live in the sandbox's
    # tmpfs and go with it (removing such a tree from the host's disk took the parent 5-12 s).
    "deep_directories": ("import os\nfor _ in range(1200):\n    os.mkdir('d')\n    os.chdir('d')\n" + WRONG,
                         {"fail"}, 4.0),
    # Files of just under the 1 MB file cap until the disk is full: the tmpfs root holds 64 MB, so
    # ENOSPC; 2.4 GB reached the host's disk in 3 s when the work dir was on it.
    "fill_disk": ("i = 0\nwhile True:\n    open(f'/tmp/work/f{i}', 'wb').write(b'x' * 1000000)\n    i += 1\n"
                  + CORRECT, {"violation"}, 4.0),
    "many_files": ("i = 0\nwhile True:\n    open(f'/tmp/e{i}', 'wb').close()\n    i += 1\n" + CORRECT,
                   {"violation"}, 4.0),
    # f is right only if a path of the host is visible: the repository, its run directories, /home,
    # /work, root's caches, the parent's temp dir, the uid locks.
    "see_host_files": ("import os\n"
                       f"seen = [p for p in {HOST_PATHS!r} if os.path.exists(p)]\nprint(seen)\n"
                       "def f(x):\n    return 2 * x if seen else x + 1\n", {"fail"}, 4.0),
    # A made-up sentinel on every fd, then a clean exit: on the result fd it is a line the harness never
    # writes (violation); elsewhere, no record of any call (error).
    "forged_sentinel": ("import os, sys\n"
                        "for fd in range(0, 64):\n    try:\n"
                        "        os.write(fd, b'pass 00000000000000000000000000000000\\n')\n"
                        "    except OSError:\n        pass\n"
                        "import __main__\nprint(sorted(vars(__main__)))\nos._exit(0)\n", {"error", "violation"}, 4.0),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_program_is_contained(name, monkeypatch, listener):
    program, statuses, wall_limit = HOSTILE[name]
    tests = ["assert len(f(1)) == 3"] if name == "patch_builtins" else TESTS
    if name == "kill_parent":  # also try the listener on 127.0.0.1
        port = listener.getsockname()[1]
        program = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n" + program
    monkeypatch.setenv("HF_TOKEN", f"hf-secret-{TOK}")
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "rlaif-sandbox-*")))
    t0 = time.monotonic()
    res = run_program(program, tests, LIMITS)
    assert time.monotonic() - t0 < wall_limit, res
    assert res.status in statuses, res
    assert res.status != "pass"
    if name == "kill_parent":
        assert "network unreachable" in res.reason, res
        with pytest.raises(TimeoutError):
            listener.accept()
    if name == "daemon":
        time.sleep(2.0)  # past the daemon's planned write
    assert _sandbox_pids() == [], f"{name}: sandbox processes survived"
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "rlaif-sandbox-*"))) <= before
    for leftover in (f"/tmp/pwned-{TOK}", f"/root/pwned-{TOK}", f"/tmp/work/late-{TOK}",
                     str(Path(__file__).parent / f"pwned-{TOK}")):
        assert not os.path.exists(leftover), leftover
    assert f"hf-secret-{TOK}" not in res.stdout + res.stderr


def test_correct_solutions_pass_and_wrong_fail():
    results = run_many([(CORRECT, TESTS), (WRONG, TESTS), (CORRECT + "print('hi')\n", TESTS)], LIMITS)
    assert [r.status for r in results] == ["pass", "fail", "pass"], results
    assert results[2].stdout == "hi\n"
    assert results[1].reason.startswith("assertion failed")


def test_output_is_capped_and_the_environment_is_empty(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", f"hf-secret-{TOK}")
    res = run_program("import os\nprint(sorted(os.environ))\nprint('y' * 100000)\n" + CORRECT, TESTS, LIMITS)
    assert res.status == "pass", res
    assert len(res.stdout) == sandbox.KEEP_BYTES
    assert "HF_TOKEN" not in res.stdout


def test_unavailable_sandbox_gives_no_verdict(monkeypatch):
    monkeypatch.setattr(sandbox, "sandbox_unavailable", lambda: "code sandbox unavailable: test")
    res = run_program(CORRECT, TESTS, LIMITS)
    assert (res.status, res.reason) == ("sandbox_error", "code sandbox unavailable: test")


def test_a_sandbox_that_cannot_be_set_up_gives_no_verdict(monkeypatch):
    """A mount that fails on this host is the sandbox's failure, not the program's: no ready line,
    so sandbox_error and a None reward, never 0.0 for every row."""
    monkeypatch.setattr(sandbox, "_setup_script", lambda: 'echo "mount: permission denied" >&2; exit 32')
    res = run_program(CORRECT, TESTS, LIMITS)
    assert res.status == "sandbox_error" and "mount: permission denied" in res.reason, res


def test_the_setup_refuses_to_pivot_outside_a_mount_namespace_of_its_own(tmp_path):
    """The setup's first step: run in the mount namespace of the pid it is given as its parent, it
    stops before any mount (a pivot_root there would swap every process's root). Both shells run
    inside a throwaway ``unshare --mount``, so even a broken guard could pivot only that one."""
    (tmp_path / "root").mkdir()
    (tmp_path / "solution.py").write_text(CORRECT)
    res = subprocess.run(["unshare", "--mount", "--propagation", "private", "--fork", "--", "sh", "-c",
                          'sh -c "$0" sandbox-setup "$1" 1048576 64 $$ true', sandbox._setup_script(), str(tmp_path)],
                         capture_output=True, text=True, timeout=30, env={})
    assert (res.returncode, res.stderr.count("refusing to pivot the root")) == (1, 1), res


def test_two_processes_never_share_a_sandbox_uid(monkeypatch):
    """Each process started its uids at (pid % 64) * 64, so two whose pids differ by a multiple of 64
    ran programs under one uid at once. A held lease is exclusive across processes."""
    code = ("import itertools, sys\nfrom align.rewards import sandbox\n"
            "sandbox._slot_counter = itertools.count(5)\nuid, _ = sandbox._lease_uid()\n"
            "print(uid, flush=True)\nsys.stdin.read()\n")
    other = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, cwd=REPO)
    try:
        theirs = int(other.stdout.readline())
        monkeypatch.setattr(sandbox, "_slot_counter", itertools.count(5))  # the same start as the other process
        first, lock = sandbox._lease_uid()
        second, lock2 = sandbox._lease_uid()  # and within one process, while the first is held
        os.close(lock)
        os.close(lock2)
        assert len({theirs, first, second}) == 3, (theirs, first, second)
    finally:
        other.stdin.close()
        other.wait(timeout=30)
