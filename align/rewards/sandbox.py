"""A sandbox for untrusted Python programs: the runner behind the ``code`` reward (align/rewards/code.py).

Each run is one ``unshare`` call (util-linux) as root, which gives the program:

* new mount, PID, network, IPC and UTS namespaces (``unshare --mount --fork --pid -n``): a
  double-forked ``setsid`` daemon dies with the namespace's init, sockets reach nothing (not
  even 127.0.0.1: the new loopback is down), ``/proc`` shows only the sandbox;
* a root of its own (``pivot_root``, as bubblewrap builds one): a tmpfs of ``Limits.disk_mb``
  holding read-only bind mounts of ``/usr`` (and of ``/bin``, ``/lib*`` where they are not
  merged-/usr links, which are copied) and of the interpreter's prefix; copies of
  ``/etc/ld.so.cache`` and of ``/dev/null``, ``zero``, ``random``, ``urandom``; a fresh ``/proc``;
  the writable ``/tmp`` (the work dir ``/tmp/work`` holds ``solution.py``), ``/var/tmp`` and
  ``/dev/shm``. The host's root is unmounted inside, so the repository, the run directories with
  their expected answers, ``/home``, ``/work`` and root's caches do not exist for the program
  (tests/test_code_review.py, ``see_host_files`` in tests/test_sandbox_code.py). All it writes
  is in that tmpfs, capped in bytes and files (ENOSPC: a violation), and vanishes with the
  namespace. The setup refuses to run in its parent's mount namespace, where a pivot_root would
  swap the root of every process on the machine;
* an unprivileged uid (``setpriv --reuid --regid --clear-groups --no-new-privs``): root would
  ignore RLIMIT_NPROC, raise its own limits and write anywhere. Each concurrent run holds its own
  uid (``UID_BASE`` + slot) under an exclusive ``flock`` on the slot's file in ``UID_LOCKS``, so
  no two runs share one, in one process or many, and one run's fork bomb does not use up
  another's process count;
* rlimits (``prlimit``): CPU seconds, address space, processes, file size (which also caps
  stdout/stderr: they go to files, and a write past the cap is SIGXFSZ), open files;
* an empty environment (no HF_TOKEN) and ``python -I -S``;
* a wall-clock timeout that SIGKILLs the whole process group (``unshare --kill-child``
  takes the namespace's init, and with it every process inside).

The setup writes one line to a file the program never holds (its stdin until the root is in
place, then ``/dev/null``); a run without that line is ``sandbox_error`` (no verdict), so a host
where a mount fails gives no 0.0 rewards.

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

import fcntl
import functools
import itertools
import json
import marshal
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
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
UID_LOCKS = Path("/run/lock/rlaif-sandbox-uids")  # one lock file per slot; /run/lock is per boot
_slot_counter = itertools.count((os.getpid() % 64) * 64)  # where this process starts looking
KEEP_BYTES = 8192  # stdout/stderr kept in the result
_READY = b"ready\n"  # what the setup writes once the program's root is in place


@dataclass(frozen=True)
class Limits:
    """Per-run limits. ``file_mb`` caps every file the program writes, stdout/stderr included;
    ``disk_mb`` all it writes together (the sandbox's root is a tmpfs of that size, which the host
    pays in RAM while the run lasts), ``disk_files`` the files and directories in it."""

    cpu_s: int = 2
    wall_s: float = 3.0
    memory_mb: int = 512
    nproc: int = 32
    file_mb: int = 1
    nofile: int = 64
    disk_mb: int = 64
    disk_files: int = 4096


class Call(NamedTuple):
    """One call the sandbox makes: the program's function ``name`` with plain-data arguments;
    ``truth``: the assert only tests the value for truth, so the child sends ``bool(value)``;
    ``wrap``: the builtin of ``_harness.APPLIED`` the assert applies to the value (with the
    plain-data ``wrap_kwargs``), which the child applies before sending it."""

    name: str
    args: tuple
    kwargs: dict
    truth: bool = False
    wrap: str = ""
    wrap_kwargs: tuple[tuple[str, Any], ...] = ()


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


# The setup runs as root inside the new namespaces, its stdin the ready file (dash redirects fds 0-9
# only). $1 the run's temp dir (its empty "root" becomes the program's root), $2 tmpfs bytes, $3 tmpfs
# inodes, $4 the parent's pid, rest: the command. The guard comes first: a pivot_root in the parent's
# mount namespace would swap the root of every process on the machine. The tmpfs may hold device
# nodes (nodev is off) because only this root setup can make them: the uid has no CAP_MKNOD.
# ``pivot_root . .`` stacks the old root on the new one, and ``umount -l .`` takes it away (pivot_root(2)).
_SETUP = r"""
set -e
outer="$1"; size="$2"; inodes="$3"; parent="$4"; shift 4
[ -e "/proc/$parent/ns/mnt" ] && [ ! /proc/self/ns/mnt -ef "/proc/$parent/ns/mnt" ] || {
  echo "sandbox setup: not in a mount namespace of its own; refusing to pivot the root" >&2; exit 1; }
mount -t tmpfs -o "size=$size,nr_inodes=$inodes,mode=0755,nosuid" sandbox "$outer/root"
cd "$outer/root"
mkdir -p proc etc dev/shm tmp/work var/tmp @DIRS@
cp -a --parents @COPIES@ .
chmod 1777 tmp var/tmp dev/shm tmp/work
@BINDS@
mount -t proc -o nosuid,nodev,noexec proc proc
cp "$outer/solution.py" tmp/work/solution.py
pivot_root . .
umount -l .
cd /tmp/work
echo ready >&0
exec 0</dev/null
set +e
"$@"
exit $?
"""


def _interpreter() -> tuple[str, str]:
    """The base interpreter (not a venv's launcher) and its prefix, which the sandbox mounts."""
    exe = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    return exe, os.path.realpath(sys.base_prefix)


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


@functools.lru_cache(maxsize=1)
def _setup_script() -> str:
    """The setup for this host: /usr and the interpreter's prefix bound read-only; the top-level
    /bin, /sbin, /lib* as they are here (merged-/usr links copied, directories bound read-only);
    copies of /etc/ld.so.cache (the loader's index) and the four harmless devices."""
    _, prefix = _interpreter()
    binds, copies = ["/usr"], ["/etc/ld.so.cache"] if os.path.isfile("/etc/ld.so.cache") else []
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            copies.append(top)
        elif os.path.isdir(top):
            binds.append(top)
    if not any(_under(prefix, b) for b in binds):
        binds.append(prefix)
    copies += [d for d in ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom") if os.path.exists(d)]
    quoted = {path: shlex.quote("." + path) for path in binds}
    return (_SETUP.replace("@DIRS@", " ".join(quoted.values()))
            .replace("@COPIES@", " ".join(map(shlex.quote, copies)))
            .replace("@BINDS@", "\n".join(f"mount --bind -o ro,nosuid,nodev {shlex.quote(p)} {q}"
                                           for p, q in quoted.items())))


def _command(outer: str, uid: int, limits: Limits) -> list[str]:
    exe, _ = _interpreter()
    mb = 1024 * 1024
    return [
        "unshare", "--mount", "--propagation", "private", "--fork", "--kill-child=SIGKILL", "--pid", "--net",
        "--ipc", "--uts", "--", "sh", "-c", _setup_script(), "sandbox-setup", outer,
        str(limits.disk_mb * mb), str(limits.disk_files), str(os.getpid()),
        "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", "--inh-caps=-all", "--",
        "prlimit", f"--cpu={limits.cpu_s}:{limits.cpu_s + 1}", f"--as={limits.memory_mb * mb}", f"--nproc={limits.nproc}",
        f"--fsize={limits.file_mb * mb}", f"--nofile={limits.nofile}", "--core=0",
        "--", exe, "-I", "-S", "-c", HARNESS,
    ]


def _lease_uid() -> tuple[int, int]:
    """A sandbox uid no other run holds, and the fd of its lock (closing it frees the uid). The
    slot files are flock()ed, which excludes every other open of them, in this process or another."""
    UID_LOCKS.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(UID_LOCKS)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise RuntimeError(f"{UID_LOCKS} is not a directory of this user")
    start = next(_slot_counter)
    for k in range(_SLOTS):
        slot = (start + k) % _SLOTS
        fd = os.open(UID_LOCKS / str(slot), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return UID_BASE + slot, fd
    raise RuntimeError(f"all {_SLOTS} sandbox uids are in use")


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
    plan = marshal.dumps([[c.name, [encode(a) for a in c.args], [[k, encode(v)] for k, v in c.kwargs.items()], c.truth,
                           c.wrap, [[k, encode(v)] for k, v in c.wrap_kwargs]] for c in calls])
    probe = sandbox_unavailable()
    if probe:
        return RunResult("sandbox_error", probe, None, 0.0)
    outer = Path(tempfile.mkdtemp(prefix="rlaif-sandbox-"))
    try:
        uid, lock = _lease_uid()
        try:
            return _run_in(outer, uid, program, plan, len(calls), limits)
        finally:
            os.close(lock)
    except (OSError, RuntimeError) as exc:
        return RunResult("sandbox_error", f"sandbox failed: {exc}", None, 0.0)
    finally:
        shutil.rmtree(outer)  # flat files only: what the program writes lives in its own tmpfs


def _run_in(outer: Path, uid: int, program: str, plan: bytes, n_calls: int, limits: Limits) -> RunResult:
    (outer / "root").mkdir()
    (outer / "solution.py").write_text(program, encoding="utf-8")
    (outer / "plan").write_bytes(plan)  # read through the fd only
    t0 = time.monotonic()
    with open(outer / "plan", "rb") as plan_fh, open(outer / "out", "wb") as out, \
            open(outer / "err", "wb") as err, open(outer / "result", "wb") as res, \
            open(outer / "ready", "wb") as ready:
        fds = (plan_fh.fileno(), res.fileno())
        proc = subprocess.Popen(
            [*_command(str(outer), uid, limits), *map(str, fds)], stdin=ready, stdout=out, stderr=err, env={},
            start_new_session=True, pass_fds=fds)
        timed_out = False
        try:
            rc = proc.wait(timeout=limits.wall_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
            _wait_until_gone(uid, deadline=time.monotonic() + 10)
    wall = time.monotonic() - t0
    stdout, stderr = _read_capped(outer / "out"), _read_capped(outer / "err")
    if (outer / "ready").read_bytes() != _READY:
        if timed_out:  # a setup slower than the wall limit says nothing of the program
            return RunResult("sandbox_error", f"the sandbox's setup took more than {limits.wall_s} s", rc,
                             round(wall, 3), stdout, stderr)
        return RunResult("sandbox_error", f"sandbox setup failed ({_ended(rc)}): {stderr.strip()[-300:]}", rc,
                         round(wall, 3), stdout, stderr)
    with open(outer / "result", "rb") as fh:  # the file size limit already caps it; this caps the read too
        text = fh.read(limits.file_mb * 1024 * 1024 + 1).decode("utf-8", "replace")
    status, reason, returned = _verdict(rc, timed_out, wall, text, n_calls, limits)
    return RunResult(status, reason, rc, round(wall, 3), stdout, stderr, returned)


@functools.lru_cache(maxsize=1)
def sandbox_unavailable() -> str | None:
    """None when the sandbox works here, else ONE line saying why (checked once per process)."""
    missing = [t for t in ("unshare", "setpriv", "prlimit", "mount", "umount", "pivot_root", "sh")
               if shutil.which(t) is None]
    if missing:
        return f"code sandbox unavailable: {', '.join(missing)} not found (install util-linux)"
    if os.geteuid() != 0:
        return "code sandbox unavailable: it needs root to create namespaces and drop to a sandbox uid"
    try:
        res = subprocess.run(["unshare", "--mount", "--fork", "--pid", "--net", "true"],
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
