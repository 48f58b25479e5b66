"""Atomic file writes: a file appears whole under its final name or not at all.

Each write goes to a hidden temp name in the same folder, is fsynced and then renamed
(``os.replace`` is atomic on POSIX within one file system), so a kill at any moment leaves
either the old file or the new one, never a torn one."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_name(path: Path) -> Path:
    """The hidden temp name a write of ``path`` goes through (``.<name>.tmp``, same folder)."""
    return path.with_name(f".{path.name}.tmp")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path to write; on success it is fsynced and renamed to ``path``; on error removed."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a hidden temp folder beside ``path``; on success it replaces ``path`` (which must be
    absent or an empty folder); on error it is removed. A folder of outputs appears whole or not at all."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it 0o700; the output gets a plain mkdir's mode
        if path.is_dir():
            path.rmdir()  # only an empty folder; anything else raises and the temp folder goes
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
