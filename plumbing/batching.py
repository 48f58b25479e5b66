"""Grouping items into batches (one copy for every stage)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def iter_batches(items: Iterable[T], size: int, weight: Callable[[T], int] = lambda _: 1) -> Iterator[list[T]]:
    """Consecutive batches whose total ``weight`` reaches ``size`` (the last may be lighter).
    With the default weight of 1 each batch holds ``size`` items; an item is never split."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1 (got {size})")
    batch: list[T] = []
    total = 0
    for item in items:
        batch.append(item)
        total += weight(item)
        if total >= size:
            yield batch
            batch, total = [], 0
    if batch:
        yield batch
