"""The Ray backend: each job is a Ray job (Ray's job submission API), submitted to a cluster's dashboard address
(``rlaif serve --backend ray --ray-address http://HEAD:8265``). The job store stays the system of record.

A job's entrypoint is ``python -m service.ray_backend JOB_DIR ATTEMPT -- python -m rlaif run recipe.yaml --root
JOB_DIR/run ...`` (the local backend's command of the job), submitted with the job's id as Ray's submission id
and its attempt in the metadata. Ray places an entrypoint that asks for no resources on the head node, so the
service's ``--root`` must be a folder the head node sees at the same path (run the service there, or share the
folder). The entrypoint (``main`` below) runs the job through service/runner.py as the local backend does, and
exits with the job's exit code, which Ray reports.

    submit   ``submit_job`` with ``RAY_JOB_STOP_SIGNAL=SIGTERM`` and ``RAY_JOB_STOP_WAIT_TIME_S`` (the service's
             ``--grace``, whole seconds) in the job's runtime environment: Ray's job supervisor reads both when it
             stops a job (ray/dashboard/modules/job/job_supervisor.py: SIGTERM to the driver's process tree, the
             wait, then SIGKILL). Only non-secret variables go there: Ray shows a job's runtime environment to
             anyone who reaches its dashboard.
    status   ``get_job_info`` (at most once a second per job); a job Ray does not know, or knows from another
             attempt, is not running, so a restarted service marks it interrupted and it resumes.
    tail     Ray's log of the job is copied into ``<job>/log`` as it grows (the byte count copied is kept in
             ``<job>/ray.json``, so a restarted service copies each byte once): the API's log and event stream
             read one file whatever the backend.
    cancel   ``stop_job``, repeated until Ray says the job ended: a job still PENDING (its supervisor actor not
             yet created) may miss a stop and start afterwards, so a cancel marker (``<job>/cancel``) is written
             first, and an entrypoint that finds it for its attempt exits before anything runs.

What Ray does not give: a head node that restarts loses its running drivers unless the cluster keeps its state
in an external store (GCS fault tolerance); the service then finds those jobs unknown or failed without an exit
code, marks them interrupted, and they resume from their run folders (tests/test_ray.py).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from service.config import TOKEN_ENV, ServiceConfig, ServiceConfigError
from service.local import LOG, RUNNER_JSON, LocalBackend

log = logging.getLogger(__name__)

EXTRA = "pip install 'rlaif[ray]'"
STATE_JSON, CANCEL = "ray.json", "cancel"
POLL_S = 1.0  # Ray's status and log of a job are asked for at most this often
STOP_EVERY_S = 2.0  # a stop not yet seen to work is sent again this often
STOP_SLACK_S = 30.0
SUBMIT_RETRY_S = 60.0  # how long a submit Ray answers with "try again later" is repeated  # how long past the grace period a cancel waits for Ray to say the job ended
ENDED = ("SUCCEEDED", "FAILED", "STOPPED")
SIGTERM_EXIT = 143  # a job Ray stopped: 128 + SIGTERM, as a shell reports it
# Variables a job gets from the service's environment: settings, never secrets (see the module docstring).
PASSED_ENV = ("HF_HOME", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_ENDPOINT", "TRANSFORMERS_OFFLINE",
              "TOKENIZERS_PARALLELISM")


class RaySubmitError(OSError):
    """Ray refused or could not be asked to start a job (the scheduler records the job failed with this line)."""


def require_ray(what: str) -> None:
    """One line naming the extra when Ray is not installed."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise ServiceConfigError(f"{what} needs Ray, which is not installed; install the extra: {EXTRA}")


def connect(address: str | None):
    """A ``JobSubmissionClient`` of the cluster at ``address`` (its dashboard's http(s)://host:port)."""
    from urllib.parse import urlsplit

    require_ray("--backend ray")
    parts = urlsplit(address or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ServiceConfigError(f"--ray-address {address!r}: give the Ray dashboard's URL, e.g. http://HEAD:8265 "
                                 "(`ray start --head` prints it)")
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except (ConnectionError, OSError, RuntimeError, ValueError) as e:
        reason = " ".join(str(e).split())[:200]
        raise ServiceConfigError(f"--ray-address {address}: no Ray cluster answers there ({reason}); start one "
                                 f"with `ray start --head` or give its dashboard's address") from None


class RayBackend:
    """Submits, watches, tails and stops jobs on a Ray cluster (service/backend.py ``Backend``)."""

    def __init__(self, config: ServiceConfig, client: Any = None):
        self.config = config
        self.client = client if client is not None else connect(config.ray_address)
        self._seen: dict[str, tuple[float, Any]] = {}  # job id -> (when asked, Ray's JobDetails or None)

    def job_dir(self, job_id: str) -> Path:
        return self.config.jobs / job_id

    # --- submit ---------------------------------------------------------------------------------------------

    def entrypoint(self, job: dict) -> str:
        """The local backend's command of the job (``rlaif run``, or what its recipe's kind runs), with this
        module's entry in front instead of the runner's (``main`` runs the runner)."""
        command = LocalBackend(self.config).command(job)
        return "exec " + shlex.join([sys.executable, "-P", "-m", "service.ray_backend", str(self.job_dir(job["id"])),
                                     str(job["attempt"]), *command[command.index("--"):]])

    def runtime_env(self) -> dict:
        here = str(Path(__file__).resolve().parents[1])  # where `service` is, for `python -m service.ray_backend`
        env = {k: v for k, v in os.environ.items() if k.startswith("RLAIF_") and k != TOKEN_ENV}
        env.update({k: os.environ[k] for k in PASSED_ENV if k in os.environ})
        env.update({"OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": here, "RAY_JOB_STOP_SIGNAL": "SIGTERM",
                    "RAY_JOB_STOP_WAIT_TIME_S": str(max(1, math.ceil(self.config.grace_s)))})
        return {"env_vars": env}

    def start(self, job: dict) -> tuple[int, int]:
        """Submit the job's attempt; (0, 0) stands for "submitted" where the local backend has a pid."""
        job_dir = self.job_dir(job["id"])
        (job_dir / CANCEL).unlink(missing_ok=True)
        _write_json(job_dir / STATE_JSON, {"attempt": job["attempt"], "copied": 0})
        # a service that stops before it stores (0, 0) finds it here and adopts the job (scheduler.reconcile)
        _write_json(job_dir / RUNNER_JSON, {"pid": 0, "start_ticks": 0, "attempt": job["attempt"]})
        self._seen.pop(job["id"], None)
        deadline = time.monotonic() + SUBMIT_RETRY_S
        while True:
            try:
                self.client.submit_job(entrypoint=self.entrypoint(job), submission_id=job["id"],
                                       runtime_env=self.runtime_env(), metadata={"rlaif_attempt": str(job["attempt"])})
                return 0, 0
            except (ConnectionError, OSError, RuntimeError, ValueError) as e:
                # a head that has just started answers before its job agent is up: Ray says to try again later
                if "try again later" not in str(e) or time.monotonic() > deadline:
                    raise RaySubmitError(f"Ray did not take the job ({_first_line(e)})") from None
                time.sleep(1.0)

    # --- status and tail ------------------------------------------------------------------------------------

    def _info(self, job: dict, fresh: bool = False):
        """Ray's JobDetails of this attempt, or None when Ray does not know it (or knows another attempt)."""
        now = time.monotonic()
        cached = self._seen.get(job["id"])
        if cached is not None and not fresh and now - cached[0] < POLL_S:
            return cached[1]
        try:
            info = self.client.get_job_info(job["id"])
        except RuntimeError as e:  # the SDK's HTTP errors; 404: Ray does not know the job
            if "404" not in str(e) and "does not exist" not in str(e):
                raise
            info = None
        if info is not None and (info.metadata or {}).get("rlaif_attempt") != str(job["attempt"]):
            info = None
        self._seen[job["id"]] = (now, info)
        return info

    def running(self, job: dict) -> bool:
        """Is the job's attempt pending or running in Ray? Its new log lines are copied on the way. While Ray
        cannot be reached the job counts as running: only Ray saying so ends it."""
        try:
            info = self._info(job)
        except (ConnectionError, OSError, RuntimeError) as e:
            log.warning("Ray did not answer about job %s: %s", job["id"], _first_line(e))
            return True
        self.copy_log(job)
        return info is not None and info.status.value not in ENDED

    def exit_code(self, job: dict) -> int | None:
        """The job's exit code as Ray reports it (143 when Ray stopped it); None when Ray does not know the job
        or its driver ended without one (the log then says what Ray said, on an ``error:`` line)."""
        try:
            info = self._info(job, fresh=True)
        except (ConnectionError, OSError, RuntimeError):
            return None
        self.copy_log(job, drain=True)
        if info is None:
            return None
        status = info.status.value
        if status == "STOPPED":
            return SIGTERM_EXIT
        if status == "SUCCEEDED":
            return info.driver_exit_code or 0
        code = info.driver_exit_code
        if status == "FAILED" and code is None:
            self._note(job, f"error: Ray: {_first_line(info.message or 'the job failed without an exit code')}")
        return 128 - code if code is not None and code < 0 else code  # killed by signal N: 128 + N

    def copy_log(self, job: dict, drain: bool = False) -> None:
        """Append what Ray's log of the job's attempt holds past what was copied (at most once a second unless
        ``drain``)."""
        job_dir = self.job_dir(job["id"])
        state = _read_json(job_dir / STATE_JSON)
        if state.get("attempt") != job["attempt"]:
            return
        last = state.get("polled", 0.0)
        if not drain and time.time() - last < POLL_S:
            return
        try:
            text = self.client.get_job_logs(job["id"]).encode("utf-8", "replace")
        except (ConnectionError, OSError, RuntimeError):
            return
        copied = int(state.get("copied", 0))
        if len(text) > copied:
            with open(job_dir / LOG, "ab") as f:
                f.write(text[copied:])
        _write_json(job_dir / STATE_JSON, {"attempt": job["attempt"], "copied": max(copied, len(text)),
                                           "polled": time.time()})

    # --- cancel ---------------------------------------------------------------------------------------------

    def terminate(self, job: dict) -> None:
        """Stop the job: the cancel marker first (a start Ray makes after the stop exits at once), then
        ``stop_job`` until Ray says the job ended (``grace_s`` + 30 s at most)."""
        (self.job_dir(job["id"]) / CANCEL).write_text(str(job["attempt"]))
        self._stop(job, self.config.grace_s + STOP_SLACK_S)
        self.copy_log(job, drain=True)

    def _stop(self, job: dict, seconds: float) -> bool:
        deadline, sent = time.monotonic() + seconds, 0.0
        while True:
            try:
                info = self._info(job, fresh=True)
            except (ConnectionError, OSError, RuntimeError) as e:
                log.warning("Ray did not answer about job %s: %s", job["id"], _first_line(e))
                info = "unknown"
            if info is None or (info != "unknown" and info.status.value in ENDED):
                return True
            if time.monotonic() >= deadline:
                log.warning("Ray had not stopped job %s after %.0f s; its cancel marker stops a late start",
                            job["id"], seconds)
                return False
            if info != "unknown" and time.monotonic() - sent >= STOP_EVERY_S:
                try:
                    self.client.stop_job(job["id"])
                except (ConnectionError, OSError, RuntimeError) as e:
                    log.warning("Ray refused to stop job %s: %s", job["id"], _first_line(e))
                sent = time.monotonic()
            time.sleep(0.25)

    def end_leftovers(self, job: dict) -> None:
        """Before a new attempt: stop what Ray still runs of an earlier one, copy the rest of its log and delete
        it from Ray, whose submission ids are unique (the new attempt takes the job's id again)."""
        try:
            info = self.client.get_job_info(job["id"])
        except (ConnectionError, OSError, RuntimeError):  # unknown to Ray (or Ray unreachable: the submit says so)
            return
        earlier = {**job, "attempt": int((info.metadata or {}).get("rlaif_attempt", -1))}
        if info.status.value not in ENDED:
            (self.job_dir(job["id"]) / CANCEL).write_text(str(earlier["attempt"]))
            self._stop(earlier, self.config.grace_s + STOP_SLACK_S)
        self.copy_log(earlier, drain=True)
        try:
            self.client.delete_job(job["id"])
        except (ConnectionError, OSError, RuntimeError) as e:  # the submit that follows fails in one line
            log.warning("Ray kept job %s of attempt %s: %s", job["id"], earlier["attempt"], _first_line(e))

    def _note(self, job: dict, line: str) -> None:
        with open(self.job_dir(job["id"]) / LOG, "a", encoding="utf-8") as f:
            f.write(f"{line}\n")


def _first_line(e: object) -> str:
    text = str(e).strip()
    return " ".join((text.splitlines() or [type(e).__name__])[0].split())[:300]


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


# --- the entrypoint Ray runs ------------------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    """``python -m service.ray_backend JOB_DIR ATTEMPT -- COMMAND ...``: exit at once if this attempt was cancelled
    before Ray started it, else run COMMAND through the job runner (service/runner.py) and exit with its code."""
    from service import runner
    from service.local import read_exit

    if len(argv) < 4 or "--" not in argv:
        print("usage: python -m service.ray_backend JOB_DIR ATTEMPT -- COMMAND ...", file=sys.stderr)
        return 2
    job_dir, attempt = Path(argv[0]), int(argv[1])
    marker = job_dir / CANCEL
    if marker.is_file() and marker.read_text().strip() == str(attempt):
        print(f"[service] attempt {attempt} was cancelled before Ray started it; nothing ran", flush=True)
        return SIGTERM_EXIT
    os.chdir(job_dir)
    runner.main(argv)
    code = read_exit(job_dir, attempt)
    return 1 if code is None else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
