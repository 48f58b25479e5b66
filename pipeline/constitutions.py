"""The constitution files one ``rlaif run`` reads, each parsed once: fingerprinting, the check of every stage's
inputs, the judge and eval stages and the judge's metrics all take it from here. A file is known by its path and
its text's sha256, so a file edited during the run is read again, never mistaken for the one read before
(tests/test_stage_registry.py::test_one_run_parses_its_constitution_once)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


class Constitutions:
    """A memo of parsed constitution files for one run of the loop."""

    def __init__(self) -> None:
        self.parsed: dict[tuple[str, str], Any] = {}

    def load(self, path: str | Path):
        """The file's Constitution, with ``load_constitution``'s checks and error lines (constitution/loader.py)."""
        from constitution.loader import parse_constitution, read_text

        text = read_text(Path(path))
        key = (str(Path(path).resolve()), hashlib.sha256(text.encode("utf-8")).hexdigest())
        if key not in self.parsed:
            self.parsed[key] = parse_constitution(text, source=str(path))
        return self.parsed[key]
