"""Argument checks every bench runs before it loads a model (one line, exit 2, via rlaif/cli.py)."""

from __future__ import annotations

import math


class BenchArgumentError(ValueError):
    """A bench argument that cannot work; the message names the option."""


def require_positive(**values: float | None) -> None:
    """Refuse any value that is not >= 1 (counts) or > 0 (sizes), or is not finite (``nan`` compares false
    with everything, so ``nan <= 0`` alone would let it through), naming its option."""
    for name, value in values.items():
        if value is None:
            continue
        if not math.isfinite(value):
            raise BenchArgumentError(f"--{name.replace('_', '-')} must be a finite number (got {value})")
        if value <= 0:
            raise BenchArgumentError(f"--{name.replace('_', '-')} must be positive (got {value})")
