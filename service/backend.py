"""Where jobs run: the one small interface the scheduler (service/scheduler.py) drives, and the choice of backend
(``rlaif serve --backend local|ray``).

    local  service/local.py: each job is a process group on this machine
    ray    service/ray_backend.py: each job is a Ray job on a cluster (Ray's job submission API)

The interface keeps the local backend's names; what each means for both:

    start(job)         submit the job's attempt; (pid, start ticks) of its runner, (0, 0) for Ray. Raises OSError
                       when it cannot (the job is then recorded failed with that line)
    running(job)       its status: still pending or running? (Ray: its new log lines are copied here too)
    exit_code(job)     how it ended, once it has; None when that is not known
    terminate(job)     cancel: stop it (SIGTERM, the grace period, SIGKILL) and return once it is gone
    end_leftovers(job) before a new attempt: end what is left of an earlier one
    job_dir(job_id)    the job's folder (recipe.yaml, log, run/), which the API reads whatever the backend

Both list their jobs through the store: on start the scheduler asks the backend about every job the store says
is running (``reconcile``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from service.config import ServiceConfig
from service.local import LocalBackend

BACKENDS = ("local", "ray")


class Backend(Protocol):
    def job_dir(self, job_id: str) -> Path: ...

    def start(self, job: dict) -> tuple[int, int]: ...

    def running(self, job: dict) -> bool: ...

    def exit_code(self, job: dict) -> int | None: ...

    def terminate(self, job: dict) -> None: ...

    def end_leftovers(self, job: dict) -> None: ...


def make_backend(config: ServiceConfig) -> Backend:
    """The backend ``config.backend`` names (the Ray one connects to its cluster here: an address that does not
    answer is one line before the service starts)."""
    if config.backend == "ray":
        from service.ray_backend import RayBackend

        return RayBackend(config)
    return LocalBackend(config)
