"""A sandbox for untrusted Python programs: the runner behind the ``code`` reward (align/rewards/code.py).

Each run is one ``unshare`` call (util-linux) as root, which gives the program:

* new PID, mount, network, IPC and UTS namespaces (``unshare --fork --pid --mount-proc -n``):
  a double-forked ``setsid`` daemon dies with the namespace's init, sockets reach nothing
  (not even 127.0.0.1: the new loopback is down), ``/proc`` shows only the sandbox;
* private tmpfs over ``/tmp``, ``/var/tmp``, ``/dev/shm``, ``/run/lock`` and ``/root`` (the
  usual world-writable places and root's home with its token caches): what the program writes
  there vanishes with the namespace; its working directory is a fresh temp dir bind-mounted at
  ``/tmp/work`` and removed afterwards; the interpreter's prefix is re-mounted read-only;
* an unprivileged uid (``setpriv --reuid --regid --clear-groups --no-new-privs``): root would
  ignore RLIMIT_NPROC, raise its own limits and write anywhere. Each concurrent run gets its own
  uid (``UID_BASE`` + slot), so one run's fork bomb does not use up another's process count;
* rlimits (``prlimit``): CPU seconds, address space, processes, file size (which also caps
  stdout/stderr: they go to files, and a write past the cap is SIGXFSZ), open files;
* an empty environment (no HF_TOKEN) and ``python -I -S``;
* a wall-clock timeout that SIGKILLs the whole process group (``unshare --kill-child``
  takes the namespace's init, and with it every process inside).

Verdicts come from align/rewards/_harness.py: a pass needs the run's random nonce on the result
fd AND exit status 0 (see that module). Statuses: pass / fail / timeout / error / violation, and
``sandbox_error`` when the sandbox itself could not run (no verdict; the reward is None).
Every hostile case is in tests/test_sandbox_code.py.

Known limit: the nonce lives in the harness's memory while the program runs, so a program that
searches interpreter memory for it (``gc``/frame introspection) could forge a pass; the
listed attacks (exit before the asserts, patched builtins/exit functions, a printed fake
sentinel) cannot.
"""

from __future__ import annotations

import functools
import itertools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HARNESS = (Path(__file__).parent / "_harness.py").read_text(encoding="utf-8")
UID_BASE = 3_000_000  # far above any login uid; uid = UID_BASE + slot
_SLOTS = 4096
_slot_counter = itertools.count((os.getpid() % 64) * 64)
_slot_lock = threading.Lock()
HIDDEN_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/root")
KEEP_BYTES = 8192  # stdout/stderr kept in the result


@dataclass(frozen=True)
class Limits:
    """Per-run limits. ``file_mb`` caps every file the program writes, stdout/stderr included."""

    cpu_s: int = 2
    wall_s: float = 3.0
    memory_mb: int = 512
    nproc: int = 32
    file_mb: int = 1
    nofile: int = 64


@dataclass(frozen=True)
class RunResult:
    status: str  # pass | fail | timeout | error | violation | sandbox_error
    reason: str
    returncode: int | None
    wall_s: float
    stdout: str = ""
    stderr: str = ""


# The setup runs as root inside the new namespaces: stage the work dir and the interpreter's
# prefix on a private /dev/shm, hide the world-writable dirs and /root behind tmpfs, put both
# back, drop privileges. $1 work dir, $2 interpreter prefix, $3 uid, rest: the command.
_SETUP = r"""
set -e
work="$1"; prefix="$2"; uid="$3"; shift 3
mount -t tmpfs -o size=1m,mode=0700 tmpfs /dev/shm
mkdir /dev/shm/w /dev/shm/p
mount --bind "$work" /dev/shm/w
mount --bind "$prefix" /dev/shm/p
for d in /tmp /var/tmp /run/lock /root; do
  if [ -d "$d" ]; then mount -t tmpfs -o size=16m,mode=1777,nosuid,nodev tmpfs "$d"; fi
done
chmod 0755 /root
mkdir -p /tmp/work "$prefix"
mount --bind /dev/shm/w /tmp/work
mount --bind /dev/shm/p "$prefix"
mount -o remount,bind,ro "$prefix"
umount /dev/shm/w /dev/shm/p
umount /dev/shm
mount -t tmpfs -o size=16m,mode=1777,nosuid,nodev tmpfs /dev/shm
cd /tmp/work
set +e
setpriv --reuid="$uid" --regid="$uid" --clear-groups --no-new-privs --inh-caps=-all -- "$@"
exit $?
"""


def _interpreter() -> tuple[str, str]:
    """The base interpreter (not a venv's launcher) and its prefix, which the sandbox re-mounts."""
    exe = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    return exe, os.path.realpath(sys.base_prefix)


def _command(work: str, uid: int, limits: Limits) -> list[str]:
    exe, prefix = _interpreter()
    mb = 1024 * 1024
    return [
        "unshare", "--fork", "--kill-child=SIGKILL", "--pid", "--mount-proc", "--net", "--ipc", "--uts",
        "--", "sh", "-c", _SETUP, "sandbox-setup", work, prefix, str(uid),
        "prlimit", f"--cpu={limits.cpu_s}:{limits.cpu_s + 1}", f"--as={limits.memory_mb * mb}", f"--nproc={limits.nproc}",
        f"--fsize={limits.file_mb * mb}", f"--nofile={limits.nofile}", "--core=0",
        "--", exe, "-I", "-S", "-c", HARNESS,
    ]


def _next_uid() -> int:
    with _slot_lock:
        return UID_BASE + next(_slot_counter) % _SLOTS


def _uid_pids(uid: int) -> list[int]:
    """Processes whose real uid is ``uid`` (from /proc/PID/status: a /proc dir's owner is root for
    a non-dumpable process)."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as fh:
                real = next(line.split()[1] for line in fh if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue  # exited while listed
        if int(real) == uid:
            pids.append(int(entry.name))
    return pids


def _wait_until_gone(uid: int, deadline: float) -> None:
    """After a kill, the namespace's init takes every process with it, but not instantly: return
    only when no process of this run's uid is left, so a run leaves nothing behind."""
    while _uid_pids(uid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"sandbox uid {uid} still has processes {_uid_pids(uid)} after SIGKILL")
        time.sleep(0.02)


def _read_capped(path: Path) -> str:
    with open(path, "rb") as fh:
        return fh.read(KEEP_BYTES).decode("utf-8", "replace")


def _verdict(rc: int | None, timed_out: bool, wall_s: float, result: str, nonce: str, limits: Limits) -> tuple[str, str]:
    lines = result.splitlines()
    if rc == 0 and f"pass {nonce}" in lines:
        return "pass", "all tests passed"
    if timed_out:
        return "timeout", f"wall clock over {limits.wall_s} s (process group killed)"
    sig = rc - 128 if rc is not None and rc > 128 else None
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and wall_s >= limits.cpu_s):
        return "timeout", f"CPU limit of {limits.cpu_s} s ({signal.Signals(sig).name})"
    if sig == signal.SIGXFSZ:
        return "violation", f"output or file over {limits.file_mb} MB (SIGXFSZ)"
    for line in reversed(lines):
        status, _, reason = line.partition(" ")
        if status in ("fail", "error", "violation"):
            return status, reason
    if sig is not None:
        return "error", f"killed by {signal.Signals(sig).name}"
    return "error", f"exited with status {rc} before the tests completed"


def run_program(program: str, tests: Sequence[str], limits: Limits = Limits()) -> RunResult:
    """Run ``program`` then each test source in the sandbox; never raises for the program's doing."""
    probe = sandbox_unavailable()
    if probe:
        return RunResult("sandbox_error", probe, None, 0.0)
    outer = Path(tempfile.mkdtemp(prefix="rlaif-sandbox-"))
    try:
        return _run_in(outer, program, tests, limits)
    except (OSError, RuntimeError) as exc:
        return RunResult("sandbox_error", f"sandbox failed: {exc}", None, 0.0)
    finally:
        shutil.rmtree(outer, ignore_errors=False)


def _run_in(outer: Path, program: str, tests: Sequence[str], limits: Limits) -> RunResult:
    uid = _next_uid()
    work = outer / "work"
    work.mkdir()
    (work / "solution.py").write_text(program, encoding="utf-8")
    for i, t in enumerate(tests):
        (work / f"test_{i}.py").write_text(t, encoding="utf-8")
    os.chown(work, uid, uid)
    nonce = secrets.token_hex(16)
    nonce_r, nonce_w = os.pipe()
    os.write(nonce_w, nonce.encode())
    os.close(nonce_w)
    t0 = time.monotonic()
    with open(outer / "out", "wb") as out, open(outer / "err", "wb") as err, \
            open(outer / "result", "wb") as res:
        proc = subprocess.Popen(
            [*_command(str(work), uid, limits), str(nonce_r), str(res.fileno())], stdin=subprocess.DEVNULL,
            stdout=out, stderr=err, env={}, start_new_session=True, pass_fds=(nonce_r, res.fileno()))
        os.close(nonce_r)
        timed_out = False
        try:
            rc = proc.wait(timeout=limits.wall_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
            _wait_until_gone(uid, deadline=time.monotonic() + 10)
    wall = time.monotonic() - t0
    status, reason = _verdict(rc, timed_out, wall, (outer / "result").read_text("utf-8", "replace"), nonce, limits)
    return RunResult(status, reason, rc, round(wall, 3), _read_capped(outer / "out"), _read_capped(outer / "err"))


@functools.lru_cache(maxsize=1)
def sandbox_unavailable() -> str | None:
    """None when the sandbox works here, else ONE line saying why (checked once per process)."""
    missing = [t for t in ("unshare", "setpriv", "prlimit", "mount", "sh") if shutil.which(t) is None]
    if missing:
        return f"code sandbox unavailable: {', '.join(missing)} not found (install util-linux)"
    if os.geteuid() != 0:
        return "code sandbox unavailable: it needs root to create namespaces and drop to a sandbox uid"
    try:
        res = subprocess.run(["unshare", "--fork", "--pid", "--mount-proc", "--net", "true"],
                             capture_output=True, text=True, timeout=30, env={})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"code sandbox unavailable: unshare failed: {exc}"
    if res.returncode != 0:
        return f"code sandbox unavailable: unshare failed: {res.stderr.strip()[:200]}"
    return None


def run_many(jobs: Sequence[tuple[str, Sequence[str]]], limits: Limits = Limits(),
             max_workers: int | None = None) -> list[RunResult]:
    """Run (program, tests) jobs in parallel, up to the CPU count at once; results in job order."""
    if not jobs:
        return []
    workers = max_workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        return list(pool.map(lambda job: run_program(job[0], job[1], limits), jobs))
