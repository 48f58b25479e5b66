"""Argument checks every bench runs before it loads a model (one line, exit 2, via rlaif/cli.py)."""

from __future__ import annotations


class BenchArgumentError(ValueError):
    """A bench argument that cannot work; the message names the option."""


def require_positive(**values: float | None) -> None:
    """Refuse any value that is not >= 1 (counts) or > 0 (sizes), naming its option."""
    for name, value in values.items():
        if value is not None and value <= 0:
            raise BenchArgumentError(f"--{name.replace('_', '-')} must be positive (got {value})")
