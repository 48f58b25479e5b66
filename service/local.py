"""The local backend: each job is its own process group on this machine.

A job runs as ``python -m service.runner <job> <attempt> -- rlaif run recipe.yaml --root <job>/run ...``, started
with ``start_new_session=True``: the runner leads a new session and process group, and ``rlaif run``, its
vLLM engine workers and accelerate ranks are in it. A process is named by its pid AND its start time (field 22
of ``/proc/<pid>/stat``, clock ticks since boot), so a pid the kernel gave to another process since is never
taken for the job's (proc(5)).

Stopping a job follows Ray's job supervisor: SIGTERM to the group (``rlaif run`` turns it into SystemExit, so
engines shut their workers down and writers keep only whole shards), a grace period, then SIGKILL to every
process still in the job's group or session or below its runner. The run folder stays resumable: every stage
keeps whole shards (plumbing/runs.py), so a retry resumes it (tests/test_service.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from service.config import TOKEN_ENV, ServiceConfig

EXIT, RUNNER_JSON, LOG = "exit", "runner.json", "log"
RUN, RECIPE = "run", "recipe.yaml"


@dataclass(frozen=True)
class Stat:
    state: str
    ppid: int
    pgrp: int
    session: int
    start_ticks: int


def stat(pid: int) -> Stat | None:
    """The fields of ``/proc/<pid>/stat`` we use; None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2:].split()  # after the command name, which may hold spaces and ')'
    return Stat(fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]))


def start_ticks(pid: int) -> int | None:
    s = stat(pid)
    return None if s is None else s.start_ticks


def alive(pid: int | None, ticks: int | None) -> bool:
    """Is the process that had ``pid`` and started at ``ticks`` still running (a zombie is not)?"""
    if not pid or ticks is None:
        return False
    s = stat(pid)
    return s is not None and s.start_ticks == ticks and s.state != "Z"


def _all() -> dict[int, Stat]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (s := stat(int(name))) is not None and s.state != "Z":
            out[int(name)] = s
    return out


def job_processes(leader: int, ticks: int) -> set[int]:
    """The live processes of the job whose runner had pid ``leader`` and start time ``ticks``: those in its
    process group or session, and every descendant of the runner, all started no earlier than the runner; once the
    runner's pid belongs to another process, nothing that started after that process is counted (pid_max may be
    as low as 32768, so a pid comes back within minutes on a busy machine)."""
    procs = _all()
    # the runner's pid given to another process since: what started after that one belongs to it, not to the job
    reused = procs[leader].start_ticks if leader in procs and procs[leader].start_ticks != ticks else None
    found = {p for p, s in procs.items() if (s.pgrp == leader or s.session == leader) and s.start_ticks >= ticks
             and (reused is None or s.start_ticks < reused)}
    if leader in procs and procs[leader].start_ticks == ticks:
        found.add(leader)
        frontier = [leader]
        while frontier:
            parent = frontier.pop()
            kids = [p for p, s in procs.items() if s.ppid == parent and p not in found]
            found.update(kids)
            frontier += kids
    return found


def _signal_all(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def read_exit(job_dir: Path, attempt: int) -> int | None:
    """The exit code the runner of ``attempt`` wrote, or None (no file, or an older attempt's)."""
    try:
        data = json.loads((job_dir / EXIT).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("attempt") != attempt or not isinstance(data.get("exit_code"), int):
        return None
    return data["exit_code"]


class LocalBackend:
    """Starts, watches and ends job process groups. ``children`` holds the jobs this process started (it
    reaps them); a job adopted after a restart is watched by pid and start time alone."""

    def __init__(self, config: ServiceConfig):
        self.config = config
        self.children: dict[str, subprocess.Popen] = {}

    def job_dir(self, job_id: str) -> Path:
        return self.config.jobs / job_id

    def command(self, job: dict) -> list[str]:
        # imported here: every job's runner imports this module and needs neither ab_job nor its pydantic
        from service import ab_job

        job_dir = self.job_dir(job["id"])
        sets = [a for o in job["overrides"] for a in ("--set", o)]
        if job["plan"] and job["plan"][0]["stage"] == ab_job.STAGE:  # `rlaif constitution ab` (service/ab_job.py)
            rlaif = [sys.executable, "-P", "-m", "rlaif", *ab_job.ab_arguments(job_dir)]
        else:
            rlaif = [sys.executable, "-P", "-m", "rlaif", "run", RECIPE, *sets, "--root", str(job_dir / RUN)]
        return [sys.executable, "-P", "-m", "service.runner", str(job_dir), str(job["attempt"]), "--", *rlaif]

    def environment(self) -> dict[str, str]:
        """The service's environment without its token, plus OMP_WAIT_POLICY=PASSIVE: several processes share
        the cores, and torch's OpenMP threads busy-waiting between ops slowed a training step 10x."""
        env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        here = str(Path(__file__).resolve().parents[1])  # where `service` is, for `python -m service.runner`
        env["PYTHONPATH"] = os.pathsep.join([here, *filter(None, [env.get("PYTHONPATH")])])
        return env

    def start(self, job: dict) -> tuple[int, int]:
        """Start the job's process group; (pid, start ticks) of its runner."""
        job_dir = self.job_dir(job["id"])
        (job_dir / EXIT).unlink(missing_ok=True)
        with open(job_dir / LOG, "ab") as log:
            proc = subprocess.Popen(self.command(job), cwd=job_dir, env=self.environment(), stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        self.children[job["id"]] = proc
        ticks = start_ticks(proc.pid)
        return proc.pid, ticks if ticks is not None else -1

    def running(self, job: dict) -> bool:
        """Is the job's runner still running? (Reaps it when it is this process's child.)"""
        proc = self.children.get(job["id"])
        if proc is not None and proc.pid == job["pid"]:
            if proc.poll() is None:
                return True
            del self.children[job["id"]]
            return False
        return alive(job["pid"], job["start_ticks"])

    def exit_code(self, job: dict) -> int | None:
        return read_exit(self.job_dir(job["id"]), job["attempt"])

    def terminate(self, job: dict) -> None:
        """End every process of the job: SIGTERM to the group, ``grace_s``, then SIGKILL to what is left; returns
        once none is left (or after 10 s more, when the kernel holds a process in an uninterruptible wait)."""
        pid, ticks = job["pid"], job["start_ticks"]
        if not pid or ticks is None:
            return
        if alive(pid, ticks):
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if self._wait_gone(job, self.config.grace_s):
            return
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            left = job_processes(pid, ticks)
            if not left:
                break
            _signal_all(left, signal.SIGKILL)
            time.sleep(0.05)
            self.running(job)  # reap the runner if it is ours
        self._wait_gone(job, 0.0)

    def _wait_gone(self, job: dict, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            self.running(job)
            if not job_processes(job["pid"], job["start_ticks"]):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def end_leftovers(self, job: dict) -> None:
        """Before a job whose runner is gone starts again: SIGKILL whatever of its old group is left (one
        writer per pipeline root; the root's lock would refuse the new attempt anyway)."""
        if job["pid"] and job["start_ticks"] is not None:
            for _ in range(100):
                left = job_processes(job["pid"], job["start_ticks"])
                if not left:
                    return
                _signal_all(left, signal.SIGKILL)
                time.sleep(0.05)
