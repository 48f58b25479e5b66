"""The scheduler: one thread of the API process that starts waiting jobs (at most ``max_running`` at once, in
queue order), notices when a running job's process group is over and records how it ended; and, when the
service starts, reconciles the store with the processes.

Reconcile (``reconcile``): every job the store says is running was started by an earlier service process. If
its runner (pid AND start time, recorded in the store, else in the job's ``runner.json``) is still alive, the job
is adopted: watched until it exits, its exit code then read from ``<job>/exit``. If the runner is gone but wrote
its exit code, the job ended while the service was down and is recorded as it ended. Otherwise the job is
``interrupted``: what is left of its group is killed (one writer per pipeline root) and it waits again, first
in the queue, to resume from its run directories (tests/test_service_recovery.py).
"""

from __future__ import annotations

import json
import logging
import threading

from plumbing.capture import redact
from service.backend import Backend
from service.config import ServiceConfig
from service.local import LOG, RUNNER_JSON
from service.store import ENDED, WAITING, JobStore, now

log = logging.getLogger(__name__)
TAIL_BYTES = 64 * 1024  # how much of a log's end is searched for the line saying why a job failed


class JobConflict(Exception):
    """The job is not in a state the request applies to (HTTP 409)."""


class Scheduler:
    def __init__(self, config: ServiceConfig, store: JobStore, backend: Backend):
        self.config, self.store, self.backend = config, store, backend
        self._wake, self._stop = threading.Event(), threading.Event()
        self._launching = threading.Lock()  # a cancel waits for a launch in progress to record its pid
        self._thread: threading.Thread | None = None

    # --- the loop -----------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="rlaif-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop scheduling; running jobs go on (they are not this process's) and are adopted by the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the loop must outlive one bad tick; the traceback is logged
                log.error("scheduler: %s", redact(_traceback()))
            self._wake.wait(self.config.poll_s)
            self._wake.clear()

    def tick(self) -> None:
        running = 0
        for job in self.store.in_state("running"):
            if job["pid"] is None or self.backend.running(job):
                running += 1
                continue
            self._record_end(job)
        while running < self.config.max_running and not self._stop.is_set():
            with self._launching:
                job = self.store.claim_next()
                if job is None:
                    return
                self._launch(job)
            running += 1

    def _launch(self, job: dict) -> None:
        self.backend.end_leftovers(job)  # an interrupted attempt's processes, if any survived
        try:
            pid, ticks = self.backend.start(job)
        except OSError as e:
            self.store.move(job["id"], ("running",), "failed", finished=now(),
                            error=f"could not start the job: {e.strerror or e}")
            return
        self.store.set_process(job["id"], pid, ticks)

    def _record_end(self, job: dict) -> None:
        code = self.backend.exit_code(job)
        if job["cancel_requested"]:
            state, error = "cancelled", "cancelled"
        elif code == 0:
            state, error = "succeeded", None
        else:
            state, error = "failed", self._why(job, code)
        moved = self.store.move(job["id"], ("running",), state, finished=now(), exit_code=code, error=error)
        if moved and code is None:  # the runner was killed before it could say how the attempt ended
            self._note(job, f"attempt {job['attempt']} ended without an exit code: its processes were killed"
                            f"{' (cancelled)' if state == 'cancelled' else ''}")

    def _why(self, job: dict, code: int | None) -> str:
        """The log's last ``error:`` line (what ``rlaif run`` printed), else its exit status."""
        path = self.backend.job_dir(job["id"]) / LOG
        try:
            with open(path, "rb") as f:
                f.seek(max(0, path.stat().st_size - TAIL_BYTES))
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            lines = []
        errors = [ln.strip() for ln in lines if ln.startswith("error:")]
        if errors:
            return redact(errors[-1].removeprefix("error:").strip())[:500]
        if code is None:
            return "the job's processes ended without an exit code (killed from outside the service?)"
        return f"rlaif run ended with exit code {code}; see the job's log"

    # --- requests -----------------------------------------------------------------------------------------------

    def cancel(self, job_id: str) -> None:
        """Cancel a waiting job at once; a running one once its process group is gone (SIGTERM, grace, SIGKILL).
        JobConflict when it already ended."""
        job = self.store.get(job_id)
        if job["state"] in WAITING and self.store.move(job_id, WAITING, "cancelled", finished=now(),
                                                       error="cancelled before it started"):
            return
        if not self.store.request_cancel(job_id):
            job = self.store.get(job_id)
            if job["state"] in WAITING:  # it was interrupted or queued again meanwhile
                return self.cancel(job_id)
            raise JobConflict(f"job {job_id} already ended ({job['state']}); nothing to cancel")
        with self._launching:  # a launch in progress has recorded the pid once this is free
            job = self.store.get(job_id)
        self.backend.terminate(job)
        self._record_end(self.store.get(job_id))
        self.wake()

    def retry(self, job_id: str) -> None:
        """Queue an ended (or interrupted) job again; it resumes from its run directories."""
        job = self.store.get(job_id)
        if job["state"] in ("queued", "running") or not self.store.requeue(job_id, (*ENDED, "interrupted")):
            raise JobConflict(f"job {job_id} is {self.store.get(job_id)['state']}; retry a job that ended")
        self.wake()

    # --- after a restart ----------------------------------------------------------------------------------------

    def reconcile(self) -> dict[str, int]:
        """Match every job recorded as running with the processes; see the module docstring."""
        seen = {"adopted": 0, "ended": 0, "interrupted": 0}
        for job in self.store.in_state("running"):
            job = self._with_runner(job)
            if self.backend.running(job):
                self._note(job, f"the service restarted; it adopted the running job (runner pid {job['pid']})")
                seen["adopted"] += 1
            elif self.backend.exit_code(job) is not None:
                self._record_end(job)
                seen["ended"] += 1
            else:
                self.backend.end_leftovers(job)
                self._note(job, f"attempt {job['attempt']} was interrupted (its processes are gone); it resumes")
                self.store.move(job["id"], ("running",), "interrupted",
                                error="the service stopped while it ran; it resumes from its run folder")
                seen["interrupted"] += 1
        return seen

    def _with_runner(self, job: dict) -> dict:
        """The job with its runner's pid and start time: from the store, else from the runner's own record (the
        service can stop between starting a runner and storing its pid)."""
        if job["pid"] is not None:
            return job
        try:
            rec = json.loads((self.backend.job_dir(job["id"]) / RUNNER_JSON).read_text())
        except (OSError, ValueError):
            return job
        if isinstance(rec, dict) and rec.get("attempt") == job["attempt"]:
            self.store.set_process(job["id"], int(rec["pid"]), int(rec["start_ticks"]))
            return self.store.get(job["id"])
        return job

    def _note(self, job: dict, line: str) -> None:
        try:
            with open(self.backend.job_dir(job["id"]) / LOG, "a", encoding="utf-8") as f:
                f.write(f"[service] {line}\n")
        except OSError as e:  # the job's folder was moved or removed: the store still says what happened
            log.warning("job %s: cannot write to its log (%s): %s", job["id"], e.strerror, line)


def _traceback() -> str:
    import traceback

    return traceback.format_exc()
