"""Where a run directory keeps the log of the command that writes it: ``<run>/logs/rlaif.log``.

The ``rlaif`` command line (``plumbing/capture.py``) sends the output of the libraries a stage runs
(vLLM and its worker processes, transformers, datasets, huggingface_hub) into a log instead of
the console; it learns where that log belongs from here. ``RunWriter`` calls ``attach_run_log``
once its run directory is validated and open, so nothing is written into a folder that the
stage then refuses. Outside the command line (tests, notebooks) no sink is installed and
``attach_run_log`` does nothing: a library never redirects its caller's output.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

LOGS = "logs"
LOG_FILE = "rlaif.log"

_sink: Callable[[Path], None] | None = None


def log_path(folder: str | Path) -> Path:
    return Path(folder) / LOGS / LOG_FILE


def set_log_sink(sink: Callable[[Path], None] | None) -> None:
    """Install (or, with ``None``, remove) the function that moves the command's log into a folder."""
    global _sink
    _sink = sink


def attach_run_log(folder: str | Path) -> None:
    """Ask the command line, if it is listening, to keep its log in ``folder/logs/rlaif.log``."""
    if _sink is not None:
        _sink(Path(folder))
