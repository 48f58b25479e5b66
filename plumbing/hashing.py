"""Stable hashes: canonical JSON, content hashes of files, folders and objects, item ids (resume keys),
prompt ids and the seeded hash fraction that splits data by prompt (``judge/parts.py``, ``align/data.py``)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_of(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def item_id(*parts: Any) -> str:
    """A stable id for an item: a hash of its inputs (the resume key)."""
    return sha256_of(list(parts))[:16]


def prompt_id(messages: Any) -> str:
    """A stable id of a prompt (its chat messages, or a plain string): the key that keeps every pair
    of one prompt on the same side of a train/test split. Keys whose value is ``None`` are dropped
    first, because ``datasets`` fills keys missing from some messages with ``None`` when it reads a
    file (tests/test_align_data.py::test_prompt_id_ignores_none_keys)."""
    if isinstance(messages, list):
        messages = [{k: v for k, v in m.items() if v is not None} if isinstance(m, dict) else m for m in messages]
    return sha256_of(messages)[:16]


def hash_fraction(key: str, seed: int) -> float:
    """A number in [0, 1) fixed by ``key`` and ``seed`` alone: ``sha256(f"{seed}:{key}")``'s first 8
    bytes over 2**64. Membership ``hash_fraction(k, seed) < share`` does not depend on other rows,
    so a key stays on its side when data is added or published again."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2**64


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- what a stage reads from a local path, by content (pipeline/loop.py's fingerprints) --------------------

# Inputs count by their bytes. A file this big is hashed once and its sha256 kept in <cache>/file-sha256.json
# under its resolved path, size, mtime, ctime and inode (git's index does the same): sha256 runs at ~1.1 GB/s on
# this project's 2-core CPU box (hashlib, measured), so a 7B model's 15 GB of weights would cost ~14 s on every
# `rlaif run`, plan included. Cheaper stand-ins were weighed and refused: config.json plus the weight index (or
# a safetensors header and the file size) is the same for a model trained again in place (same tensor names,
# shapes and sizes), and an mtime alone can be put back (`cp -p`, `touch -r`). Any write, or a rename over the
# file, changes its ctime or inode, so a changed file is hashed again; a copied or moved one is hashed once more
# under its new name and gets the same sha256 (tests/test_pipeline.py::test_big_files_are_hashed_once_per_stamp).
BIG_FILE = 64 << 20
# A file changed less than this long before its hash began is not remembered: a write in the same timestamp tick
# as the stamp would leave the stamp unchanged (git's "racy clean" case; whole seconds on ext3 and HFS+, 2 s on FAT).
SETTLE_NS = 2_000_000_000


def cache_file() -> Path:
    """Where big files' hashes are kept: the user cache rlaif's models go to (generator/models.py)."""
    root = os.environ.get("RLAIF_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "rlaif")
    return Path(root) / "file-sha256.json"


def content_sha256(path: str | Path) -> str:
    """``file_sha256`` of ``path``; for a file of ``BIG_FILE`` bytes or more, remembered while its stamp holds."""
    path = Path(path).resolve()
    st = path.stat()
    if st.st_size < BIG_FILE:
        return file_sha256(path)
    stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    kept = _read_cache().get(str(path))
    if kept is not None and kept[:4] == stamp:
        return kept[4]
    # settled before the read: a same-tick write during a long read leaves the stamp as it was, so time measured
    # after the read would keep the sha256 of bytes the file no longer holds
    # (tests/test_pipeline_review.py::test_a_big_file_written_again_while_it_is_hashed_is_not_remembered)
    settled = time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > SETTLE_NS
    sha = file_sha256(path)
    after = path.stat()
    if settled and [after.st_size, after.st_mtime_ns, after.st_ctime_ns, after.st_ino] == stamp:
        _remember(str(path), [*stamp, sha])
    return sha


def _read_cache() -> dict[str, list]:
    path = cache_file()
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        log.warning("%s unreadable (%s); big files are hashed again", path, e)
        return {}
    return data if isinstance(data, dict) else {}


def _remember(key: str, entry: list) -> None:
    """Add one entry, dropping those of files that are gone; one writer at a time (a file lock)."""
    from filelock import FileLock

    from plumbing.atomic import write_text

    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock", timeout=30):
            cache = {k: v for k, v in _read_cache().items() if os.path.exists(k)}
            cache[key] = entry
            write_text(path, json.dumps(cache, sort_keys=True) + "\n")
    except (OSError, TimeoutError) as e:  # a read-only or busy cache costs time, never a wrong hash
        log.warning("could not keep the sha256 of %s in %s (%s); it is hashed again next time", key, path, e)


# What makes a folder a model, whatever else it holds (an `rlaif align` output also has a manifest.json): the
# files ``from_pretrained`` starts from, a PEFT adapter's included.
MODEL_FILES = ("config.json", "adapter_config.json", "model.safetensors", "model.safetensors.index.json",
               "pytorch_model.bin", "pytorch_model.bin.index.json")


def is_model_folder(folder: str | Path) -> bool:
    return any((Path(folder) / name).is_file() for name in MODEL_FILES)


def source_sha256(target: str) -> str | None:
    """sha256 of the file of the module a ``module:attr`` name points into (user code a stage runs: a reward
    function, an engine class), located with ``importlib.util.find_spec`` as ``import`` would locate it, without
    running it (a dotted name's parent packages are imported); None when it has no file (built in, frozen) or
    cannot be found. That file counts, not the modules it imports."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(target.partition(":")[0])
    except (ImportError, ValueError):  # a missing parent package, or a module without a spec
        return None
    origin = spec.origin if spec is not None and spec.has_location else None
    return content_sha256(origin) if origin and os.path.isfile(origin) else None


def folder_sha256(folder: str | Path, recursive: bool = True) -> str:
    """sha256 of a folder's files, each by its path inside the folder and its content (``content_sha256``):
    the folder's own name and place are not part of it. Hidden names (``.git``, ``.lock``, ``.cache``,
    editor files) are left out, as are subfolders when ``recursive`` is false. A symlinked subfolder is read
    through, as Jinja's loader and ``from_pretrained`` read it (tests/test_pipeline_review.py); one that leads
    back into a folder it lies in is read once."""
    folder = Path(folder)
    entries = []
    for rel in sorted(_files(folder, recursive), key=lambda rel: rel.parts):  # rglob's order: hashes are kept
        entries.append([rel.as_posix(), content_sha256(folder / rel)])
    return sha256_of(entries)


def _files(folder: Path, recursive: bool) -> list[Path]:
    """The non-hidden regular files under ``folder``, symlinks followed, relative to it (``os.walk`` with
    ``followlinks``). A subfolder whose real path is one of its ancestors' (a symlink loop) is not entered; an
    unreadable one raises (its content cannot count)."""
    out, above = [], {}  # each subfolder to walk -> the real paths of the folders above it

    def fail(e: OSError) -> None:
        raise e

    for top, dirs, files in os.walk(folder, followlinks=True, onerror=fail):
        chain = (*above.get(top, ()), os.path.realpath(top))
        dirs[:] = [d for d in dirs if recursive and not d.startswith(".")
                   and os.path.realpath(os.path.join(top, d)) not in chain]
        above.update((os.path.join(top, d), chain) for d in dirs)
        rel = Path(top).relative_to(folder)
        out += [rel / f for f in files if not f.startswith(".") and os.path.isfile(os.path.join(top, f))]
    return out
