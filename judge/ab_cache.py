"""The vote cache of ``rlaif constitution ab``: one judged (pair, order, principle text) is judged once.

A vote is stored under a key that names everything the judge's reply depends on: the pair, the order,
the sha256 of the rendered principle text, the judge (model, the content of a model named by a local path,
engine kind, dtype, layout, top-k: judge/ab.py ``judge_identity``) and the
sha256 of the whole prompt (which also covers the few-shot block and ``--templates``). Editing one
principle's ``compare`` text changes the keys of that principle's votes only, so a re-run judges only
those (tests/test_constitution_ab.py::test_editing_one_principle_rejudges_only_its_votes); a principle
whose text is the same in both constitutions is judged once for both.

The cache is one SQLite file (``votes.sqlite``, WAL): every batch of votes is committed as it is
judged, so a killed run keeps what it judged, and two runs may share one ``--cache`` folder. A vote
whose options fall outside the top-k is stored with its reason: it is the judge's answer, as deterministic
as a score. A prompt too long for the engine's context is not stored: that is the engine's context
length (a server's ``--max-model-len``), which the key does not name, so each run finds it again by
counting the prompt's tokens (tests/test_constitution_ab.py: a prompt too long for one engine is judged
by one with a longer context). Failures of the engine are never stored.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from judge.errors import JudgeError
from plumbing.hashing import sha256_of

CACHE = "cache"  # the default cache folder: <out>/cache
DB = "votes.sqlite"
FORMAT, VERSION = "rlaif-ab-vote-cache", 1
# The files SQLite keeps beside its database (WAL mode, a rollback journal after a crash).
DB_FILES = frozenset({DB, f"{DB}-wal", f"{DB}-shm", f"{DB}-journal"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS votes (
    key TEXT PRIMARY KEY, pair_id TEXT NOT NULL, ord TEXT NOT NULL, principle_sha256 TEXT NOT NULL,
    principle_id TEXT NOT NULL, judge TEXT NOT NULL, p_a REAL, reason TEXT, raw TEXT NOT NULL,
    created TEXT NOT NULL);
"""


def text_sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def vote_key(judge: dict, pair_id: str, order: str, principle_text: str, prompt: str) -> str:
    """The cache key of one vote (module docstring); ``judge`` is ``ab.judge_identity``'s dict."""
    return sha256_of([judge, pair_id, order, text_sha256(principle_text), text_sha256(prompt)])


def _meta(path: Path) -> dict | None:
    """The meta table of an existing database, or None when the file is not one of ours."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            return dict(con.execute("SELECT key, value FROM meta").fetchall())
        finally:
            con.close()
    except sqlite3.DatabaseError:
        return None


def check_cache_dir(folder: Path, flag: str) -> None:
    """Refuse, before anything is judged, a cache folder that is not one: a file, a folder holding
    anything but our database, or a database of another tool or version."""
    if folder.exists() and not folder.is_dir():
        raise JudgeError(f"{flag} {folder} is a file; give a folder for the vote cache")
    if not folder.is_dir():
        return
    other = sorted(p.name for p in folder.iterdir() if p.name not in DB_FILES)
    if other:
        raise JudgeError(f"{flag} {folder} holds {other[0]!r}, which is not an ab vote cache; give an empty or "
                         f"new folder, or one an earlier 'rlaif constitution ab' made")
    if (folder / DB).exists():
        meta = _meta(folder / DB)
        if meta is None or meta.get("format") != FORMAT:
            raise JudgeError(f"{flag} {folder / DB} is not an ab vote cache; move it away or give another folder")
        if meta.get("version") != str(VERSION):
            raise JudgeError(f"{flag} {folder / DB} is a version {meta.get('version')} vote cache, this rlaif "
                             f"reads version {VERSION}; delete the folder to judge afresh, or give another one")


def check_cache_place(cache: Path, out: Path) -> None:
    """Refuse a ``--cache`` that is ``--out``, lies inside it (other than its default ``<out>/cache``) or holds
    it: the outputs could not be written beside a foreign folder, nor a cache hold an output folder."""
    c, o = cache.expanduser().resolve(), out.expanduser().resolve()
    if c == o / CACHE:
        return
    if c == o or o in c.parents:
        raise JudgeError(f"--cache {cache} is inside --out {out}; drop --cache to keep the votes in {out / CACHE}, "
                         f"or give a folder outside --out")
    if c in o.parents:
        raise JudgeError(f"--out {out} is inside --cache {cache}; give the outputs and the vote cache separate "
                         f"folders")


def is_cache_dir(folder: Path) -> bool:
    """Does ``folder`` hold only a vote cache of ours (what a run killed before its outputs leaves)?"""
    try:
        check_cache_dir(folder, "")
    except JudgeError:
        return False
    return folder.is_dir()


class VoteCache:
    """The cache folder's database; ``get`` and ``put`` votes by key (module docstring)."""

    def __init__(self, folder: Path):
        check_cache_dir(folder, "--cache")
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / DB
        self._con = sqlite3.connect(self.path, timeout=60)
        self._con.execute("PRAGMA journal_mode=WAL")
        with self._con:
            self._con.executescript(_SCHEMA)
            self._con.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)",
                                  [("format", FORMAT), ("version", str(VERSION))])

    def get(self, keys: Iterable[str]) -> dict[str, dict]:
        """The stored votes among ``keys``: key -> {"p_a", "reason", "raw"}."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, dict] = {}
        for start in range(0, len(keys), 500):  # SQLite's limit on bound parameters
            chunk = keys[start:start + 500]
            rows = self._con.execute(f"SELECT key, p_a, reason, raw FROM votes WHERE key IN "
                                     f"({','.join('?' * len(chunk))})", chunk)
            for key, p_a, reason, raw in rows:
                out[key] = {"p_a": p_a, "reason": reason, "raw": json.loads(raw)}
        return out

    def put(self, entries: Iterable[dict]) -> None:
        """Store votes in one transaction; each entry holds ``key, pair_id, order, principle_text,
        principle_id, judge, p_a, reason, raw``."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self._con:
            self._con.executemany(
                "INSERT OR REPLACE INTO votes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(e["key"], e["pair_id"], e["order"], text_sha256(e["principle_text"]), e["principle_id"],
                  json.dumps(e["judge"], sort_keys=True), e["p_a"], e["reason"], json.dumps(e["raw"]), now)
                 for e in entries])

    def __len__(self) -> int:
        return self._con.execute("SELECT COUNT(*) FROM votes").fetchone()[0]

    def close(self) -> None:
        self._con.close()
