"""Stable hashes: canonical JSON, content hashes of files and objects, item ids (resume keys), prompt
ids and the seeded hash fraction that splits data by prompt (``judge/parts.py``, ``align/data.py``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


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
