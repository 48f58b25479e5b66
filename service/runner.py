"""The wrapper every job runs in: ``python -m service.runner JOB_DIR ATTEMPT -- rlaif run ...``.

It leads the job's process group (the service starts it in a new session), starts ``rlaif run`` with the
log as its stdout and stderr, waits for it, ends whatever of the job is left below it, and writes
``JOB_DIR/exit`` (``{"attempt": n, "exit_code": c}``) atomically. The service reads the exit code from that file
rather than from ``wait()``, so a job it adopted after a restart (not its child) still has one.

The runner is a child subreaper (``PR_SET_CHILD_SUBREAPER``, prctl(2)): a process of the job whose parent exits
(a vLLM worker of a crashed ``rlaif run``) becomes the runner's child instead of init's, so the runner can end
it before it reports the job over. SIGTERM reaches the whole group when the job is cancelled; the runner lets
``rlaif run`` shut down (it turns SIGTERM into SystemExit and closes its engines) and writes its exit code.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from service.local import EXIT, RUNNER_JSON, job_processes, start_ticks

PR_SET_CHILD_SUBREAPER = 36
LEFTOVER_GRACE_S = 3.0


def _subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        _say(f"could not become a child subreaper (errno {ctypes.get_errno()}); orphans go to init")


def _say(line: str) -> None:
    sys.stdout.write(f"[service] {line}\n")
    sys.stdout.flush()


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _reap() -> None:
    """Collect adopted orphans that exited (we are their subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _end_the_rest(me: int, ticks: int) -> None:
    """SIGTERM, then SIGKILL after ``LEFTOVER_GRACE_S``, to every process of the job but this one."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + (LEFTOVER_GRACE_S if sig == signal.SIGTERM else 5.0)
        left = job_processes(me, ticks) - {me}
        if not left:
            return
        _say(f"ending {len(left)} process(es) the job left behind ({signal.Signals(sig).name})")
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        while time.monotonic() < deadline:
            _reap()
            if not job_processes(me, ticks) - {me}:
                return
            time.sleep(0.05)


def main(argv: list[str]) -> int:
    if len(argv) < 4 or "--" not in argv:
        print("usage: python -m service.runner JOB_DIR ATTEMPT -- COMMAND ...", file=sys.stderr)
        return 2
    job_dir, attempt, command = Path(argv[0]), int(argv[1]), argv[argv.index("--") + 1:]
    me, ticks = os.getpid(), start_ticks(os.getpid())
    signal.signal(signal.SIGTERM, lambda *_: None)  # the group got it too: wait for rlaif run to shut down
    _subreaper()
    _write_json(job_dir / RUNNER_JSON, {"pid": me, "start_ticks": ticks, "attempt": attempt})
    _say(f"attempt {attempt} started (runner pid {me})")
    try:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, cwd=job_dir)
    except OSError as e:
        _say(f"could not start {command[0]}: {e.strerror}")
        code = 127
    else:
        code = child.wait()
        code = 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell reports it
    _end_the_rest(me, ticks if ticks is not None else 0)
    _write_json(job_dir / EXIT, {"attempt": attempt, "exit_code": code})
    _say(f"attempt {attempt} ended: exit code {code}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
