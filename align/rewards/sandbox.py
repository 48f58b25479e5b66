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

What comes back is data, never a verdict: the program runs, then the calls the parent asked
for (``run_calls``: function names and plain-data arguments, nothing else); the child writes each
return value in the tagged encoding of align/rewards/_harness.py to a result file the parent
opened, and the parent decodes them. ``status`` is ``returned`` when every call gave a value or
failed, else timeout / error / violation, or ``sandbox_error`` when the sandbox itself could
not run (no verdict; the reward is None). The comparison with the expected values, which never
enter the sandbox, is align/rewards/code.py's. Since the program can write any line to the
result fd, the parent accepts exactly one record per call in call order and counts any other
line as a violation (tests/test_code_forgery.py); every hostile case is in tests/test_sandbox_code.py.
"""

from __future__ import annotations

import functools
import itertools
import json
import marshal
import os
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
from typing import Any, NamedTuple

from align.rewards._harness import decode, encode

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


class Call(NamedTuple):
    """One call the sandbox makes: the program's function ``name`` with plain-data arguments;
    ``truth``: the assert only tests the value for truth, so the child sends ``bool(value)``."""

    name: str
    args: tuple
    kwargs: dict
    truth: bool = False


@dataclass(frozen=True)
class Returned:
    """What one call gave back: ``value`` (plain data, decoded here) when ``status`` is "value",
    else "error" or "violation" and the child's reason."""

    status: str
    value: Any = None
    reason: str = ""


@dataclass(frozen=True)
class RunResult:
    status: str  # returned | timeout | error | violation | sandbox_error (code.py: returned -> pass | fail | error)
    reason: str
    returncode: int | None
    wall_s: float
    stdout: str = ""
    stderr: str = ""
    calls: tuple[Returned, ...] = ()


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


_FAILED = ("error", "violation")


def _returned(rest: list) -> Returned:
    if len(rest) == 2 and rest[0] == "value":
        return Returned("value", decode(rest[1]))
    if len(rest) == 3 and rest[0] == "failed" and rest[1] in _FAILED and type(rest[2]) is str:
        return Returned(rest[1], reason=rest[2][:400])
    raise ValueError("neither a value nor a failure")


def _records(text: str, n_calls: int) -> tuple[tuple[str, str] | None, list[Returned]]:
    """The child's lines as (the failure of a program that raised before the calls, the calls'
    outcomes in order); ValueError for any line the harness cannot have written at that place."""
    lines = text.split("\n")
    if lines.pop() != "":
        raise ValueError("the last line is unterminated")
    program, returned = None, []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            raise ValueError(f"line {number} is not JSON") from None
        if type(record) is list and program is None and record[:1] == ["program"] and not returned \
                and len(record) == 3 and record[1] in _FAILED and type(record[2]) is str:
            program = (record[1], record[2][:400])
        elif type(record) is list and program is None and record[:1] == ["call"] and len(record) > 2 \
                and type(record[1]) is int and record[1] == len(returned) < n_calls:
            returned.append(_returned(record[2:]))
        else:
            raise ValueError(f"line {number} is not the record of call {len(returned)}")
    return program, returned


def _ended(rc: int | None) -> str:
    """How the sandbox's process ended, from ``sh``'s status (128 + N for signal N)."""
    if rc is None or rc <= 128:
        return f"exited with status {rc}"
    try:
        return f"killed by {signal.Signals(rc - 128).name}"
    except ValueError:  # a status over 128 that no signal gave (os._exit(200))
        return f"exited with status {rc}"


def _verdict(rc: int | None, timed_out: bool, wall_s: float, text: str, n_calls: int,
             limits: Limits) -> tuple[str, str, tuple[Returned, ...]]:
    if timed_out:
        return "timeout", f"wall clock over {limits.wall_s} s (process group killed)", ()
    sig = rc - 128 if rc is not None and rc > 128 else None
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and wall_s >= limits.cpu_s):
        return "timeout", f"CPU limit of {limits.cpu_s} s ({signal.Signals(sig).name})", ()
    if sig == signal.SIGXFSZ:
        return "violation", f"output or file over {limits.file_mb} MB (SIGXFSZ)", ()
    try:
        program, returned = _records(text, n_calls)
    except (ValueError, RecursionError) as exc:
        return "violation", f"the result file holds a line the harness did not write: {exc}", ()
    if program is not None:
        return program[0], "the program raised before the calls: " + program[1], ()
    if len(returned) < n_calls:
        return "error", f"{_ended(rc)} after {len(returned)} of {n_calls} calls", tuple(returned)
    if rc != 0:
        return "error", f"exited with status {rc} after its calls", tuple(returned)
    return "returned", f"{n_calls} calls returned or failed", tuple(returned)


def run_calls(program: str, calls: Sequence[Call], limits: Limits = Limits()) -> RunResult:
    """Run ``program`` then each ``Call`` in the sandbox; never raises for
    the program's doing. Arguments must be plain data (``_harness.encode``): TypeError otherwise."""
    plan = marshal.dumps([[c.name, [encode(a) for a in c.args], [[k, encode(v)] for k, v in c.kwargs.items()], c.truth]
                          for c in calls])
    probe = sandbox_unavailable()
    if probe:
        return RunResult("sandbox_error", probe, None, 0.0)
    outer = Path(tempfile.mkdtemp(prefix="rlaif-sandbox-"))
    try:
        return _run_in(outer, program, plan, len(calls), limits)
    except (OSError, RuntimeError) as exc:
        return RunResult("sandbox_error", f"sandbox failed: {exc}", None, 0.0)
    finally:
        _remove(outer)


def _remove(path: Path) -> None:
    try:
        shutil.rmtree(path)
    except RecursionError:  # the program nested directories deeper than Python recurses; rm walks any depth
        subprocess.run(["rm", "-rf", "--", str(path)], check=True, env={}, timeout=120, capture_output=True)


def _run_in(outer: Path, program: str, plan: bytes, n_calls: int, limits: Limits) -> RunResult:
    uid = _next_uid()
    work = outer / "work"
    work.mkdir()
    (work / "solution.py").write_text(program, encoding="utf-8")
    os.chown(work, uid, uid)
    (outer / "plan").write_bytes(plan)  # outside the work dir: read through the fd only
    t0 = time.monotonic()
    with open(outer / "plan", "rb") as plan_fh, open(outer / "out", "wb") as out, \
            open(outer / "err", "wb") as err, open(outer / "result", "wb") as res:
        fds = (plan_fh.fileno(), res.fileno())
        proc = subprocess.Popen(
            [*_command(str(work), uid, limits), *map(str, fds)], stdin=subprocess.DEVNULL,
            stdout=out, stderr=err, env={}, start_new_session=True, pass_fds=fds)
        timed_out = False
        try:
            rc = proc.wait(timeout=limits.wall_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
            _wait_until_gone(uid, deadline=time.monotonic() + 10)
    wall = time.monotonic() - t0
    with open(outer / "result", "rb") as fh:  # the file size limit already caps it; this caps the read too
        text = fh.read(limits.file_mb * 1024 * 1024 + 1).decode("utf-8", "replace")
    status, reason, returned = _verdict(rc, timed_out, wall, text, n_calls, limits)
    return RunResult(status, reason, rc, round(wall, 3), _read_capped(outer / "out"), _read_capped(outer / "err"),
                     returned)


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


def run_many(jobs: Sequence[tuple[str, Sequence[Call]]], limits: Limits = Limits(),
             max_workers: int | None = None) -> list[RunResult]:
    """Run (program, calls) jobs in parallel, up to the CPU count at once; results in job order."""
    if not jobs:
        return []
    workers = max_workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        return list(pool.map(lambda job: run_calls(job[0], job[1], limits), jobs))
