"""The job store: SQLite at ``<root>/service.db``, the system of record of the service.

WAL mode, one connection shared by the API's threads behind a lock, ``busy_timeout`` for any other reader (a
test's ``PRAGMA integrity_check``), short transactions. Every state change is one ``UPDATE ... WHERE id = ? AND
state IN (old states)``, so two actors (the scheduler reaping a job, a cancel request) cannot both move a job:
whoever comes second changes nothing and is told so.

States: ``queued -> running -> succeeded | failed | cancelled``; ``interrupted`` is a job that was running when
the service stopped and whose processes were gone when it started again: it is queued again (``WAITING``) and
resumes from its run directories. A job keeps its place in the queue (``queue_pos``) when it is interrupted; a
retried one goes to the back.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STATES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
ENDED = ("succeeded", "failed", "cancelled")
WAITING = ("queued", "interrupted")  # what the scheduler starts, oldest queue_pos first

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    created TEXT NOT NULL,
    started TEXT,
    finished TEXT,
    exit_code INTEGER,
    error TEXT,
    plan TEXT NOT NULL,
    overrides TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    queue_pos INTEGER NOT NULL,
    pid INTEGER,
    start_ticks INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, queue_pos);
"""
PUBLIC = ("id", "name", "state", "created", "started", "finished", "exit_code", "error", "plan", "overrides",
          "attempt")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class QueueFull(Exception):
    pass


class JobStore:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10.0)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: a power cut may lose the last commit, never corrupt
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction (BEGIN IMMEDIATE: the write lock is taken before anything is read)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- writes -------------------------------------------------------------------------------------------------

    def insert(self, job_id: str, name: str, plan: list[dict], overrides: list[str], max_queued: int) -> dict:
        """A new queued job; QueueFull when ``max_queued`` jobs already wait (counted in the same transaction)."""
        with self._tx() as db:
            waiting = db.execute(f"SELECT COUNT(*) FROM jobs WHERE state IN {WAITING}").fetchone()[0]
            if waiting >= max_queued:
                raise QueueFull(waiting)
            db.execute("INSERT INTO jobs (id, name, state, created, plan, overrides, queue_pos) VALUES "
                       "(?, ?, 'queued', ?, ?, ?, (SELECT COALESCE(MAX(queue_pos), 0) + 1 FROM jobs))",
                       (job_id, name, now(), json.dumps(plan), json.dumps(overrides)))
        return self.get(job_id)

    def move(self, job_id: str, old: tuple[str, ...], new: str, **fields) -> bool:
        """Set ``state = new`` (and ``fields``) only if the job is in one of ``old``; True if it moved."""
        sets = ", ".join(f"{k} = ?" for k in ("state", *fields))
        marks = ", ".join("?" * len(old))
        with self._tx() as db:
            cur = db.execute(f"UPDATE jobs SET {sets} WHERE id = ? AND state IN ({marks})",
                             (new, *fields.values(), job_id, *old))
            return cur.rowcount == 1

    def claim_next(self) -> dict | None:
        """The oldest waiting job, moved to running with its attempt counted; None when nothing waits."""
        with self._tx() as db:
            row = db.execute(f"SELECT id FROM jobs WHERE state IN {WAITING} ORDER BY queue_pos LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET state = 'running', attempt = attempt + 1, started = ?, finished = NULL, "
                       "exit_code = NULL, error = NULL, pid = NULL, start_ticks = NULL, cancel_requested = 0 "
                       "WHERE id = ?", (now(), row["id"]))
        return self.get(row["id"])

    def requeue(self, job_id: str, old: tuple[str, ...]) -> bool:
        """Back to the end of the queue (a retry), if the job is in one of ``old``."""
        with self._tx() as db:
            cur = db.execute(f"UPDATE jobs SET state = 'queued', finished = NULL, exit_code = NULL, error = NULL, "
                             f"cancel_requested = 0, queue_pos = (SELECT MAX(queue_pos) + 1 FROM jobs) "
                             f"WHERE id = ? AND state IN ({', '.join('?' * len(old))})", (job_id, *old))
            return cur.rowcount == 1

    def set_process(self, job_id: str, pid: int, start_ticks: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET pid = ?, start_ticks = ? WHERE id = ?", (pid, start_ticks, job_id))

    def request_cancel(self, job_id: str) -> bool:
        with self._tx() as db:
            return db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND state = 'running'",
                              (job_id,)).rowcount == 1

    # --- reads --------------------------------------------------------------------------------------------------

    def get(self, job_id: str) -> dict | None:
        rows = self._query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _record(rows[0]) if rows else None

    def list(self, state: str | None = None) -> list[dict]:
        if state is None:
            rows = self._query("SELECT * FROM jobs ORDER BY seq DESC")
        else:
            rows = self._query("SELECT * FROM jobs WHERE state = ? ORDER BY seq DESC", (state,))
        return [_record(r) for r in rows]

    def in_state(self, *states: str) -> list[dict]:
        rows = self._query(f"SELECT * FROM jobs WHERE state IN ({', '.join('?' * len(states))}) ORDER BY queue_pos",
                           states)
        return [_record(r) for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self._query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        out = dict.fromkeys(STATES, 0)
        out.update({r["state"]: r["n"] for r in rows})
        return out


def _record(row: sqlite3.Row) -> dict:
    job = dict(row)
    job["plan"] = json.loads(job["plan"])
    job["overrides"] = json.loads(job["overrides"])
    job["cancel_requested"] = bool(job["cancel_requested"])
    return job


def public(job: dict) -> dict:
    """The fields a response shows (no process ids: they are the service's business)."""
    return {k: job[k] for k in PUBLIC}
