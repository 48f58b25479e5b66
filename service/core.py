"""What the routes work with: ``Service`` holds the config, the job store, the local backend, the scheduler and
the folders a recipe may read; routes receive it through the ``get_service`` dependency, so a test can swap it.

``Service.open`` takes the root's lock (one service per root: two would both start its jobs), reconciles the
store with the processes and starts the scheduler; ``close`` stops the scheduler and leaves running jobs
running (they are process groups of their own; the next ``open`` adopts them).
"""

from __future__ import annotations

from importlib import metadata

from fastapi import Request

from service.backend import make_backend
from service.config import ServiceConfig, ServiceConfigError
from service.recipes import bundled_dirs
from service.scheduler import Scheduler
from service.store import JobStore

API = "/api/v1"
LOCK = "service.lock"


def version() -> str:
    try:
        return metadata.version("rlaif")
    except metadata.PackageNotFoundError:
        return "unknown"


class Service:
    """The config, the job store, the backend, the scheduler and the folders a recipe may read."""

    def __init__(self, config: ServiceConfig):
        self.config = config
        self.store: JobStore | None = None
        self.backend = make_backend(config)
        self.scheduler: Scheduler | None = None
        self.allowed = [config.uploads, *bundled_dirs(), *config.data_dirs]
        self._lock = None

    @property
    def is_open(self) -> bool:
        return self.store is not None

    def open(self) -> dict[str, int]:
        from filelock import FileLock, Timeout

        for folder in (self.config.root, self.config.jobs, self.config.uploads):
            folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.config.root / LOCK))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise ServiceConfigError(f"--root {self.config.root}: another `rlaif serve` uses it") from None
        self._lock = lock
        self.store = JobStore(self.config.db)
        self.scheduler = Scheduler(self.config, self.store, self.backend)
        seen = self.scheduler.reconcile()
        self.scheduler.start()
        return seen

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.store is not None:
            self.store.close()
            self.store = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def get_service(request: Request) -> Service:
    return request.app.state.service
