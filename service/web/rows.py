"""A job's preference rows, one page at a time, without reading the dataset whole.

A judge run's shards (``<run>/judge/data/*.parquet``, plumbing/runs.py) are parquet files of one or more row
groups. The small columns the filters read (``principle_ids``, and with filters ``p_chosen`` and
``position_consistent``) are scanned row group by row group, keeping only the principle ids seen, the count and
the positions of the page's rows (without filters the positions come from the row counts in the metadata);
then only the row groups holding the page's rows are read with every column
(tests/test_web_ui.py::test_data_page_reads_only_the_row_groups_of_its_page).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

PAGE_ROWS = 20
FILTER_COLUMNS = ["p_chosen", "position_consistent", "principle_ids"]
SHOWN = ["id", "prompt", "chosen", "rejected", "p_chosen", "votes", "principle_ids", "position_consistent"]


@dataclass(frozen=True)
class Filters:
    principle: str | None = None
    consistent: bool | None = None
    p_min: float | None = None
    p_max: float | None = None

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.principle, self.consistent, self.p_min, self.p_max))


def _flags(values) -> np.ndarray:
    return pc.fill_null(values, False).to_numpy(zero_copy_only=False).astype(bool)


def _mask(table, f: Filters) -> np.ndarray:
    """Which rows of ``table`` (the filter columns of one row group) pass the filters; a null passes none."""
    keep = np.ones(table.num_rows, dtype=bool)
    if f.principle is not None:
        hit = _flags(pc.equal(pc.list_flatten(table["principle_ids"]), f.principle))
        parents = pc.list_parent_indices(table["principle_ids"]).to_numpy()
        named = np.zeros(table.num_rows, dtype=bool)
        named[parents[hit]] = True
        keep &= named
    if f.consistent is not None:
        keep &= _flags(pc.equal(table["position_consistent"], f.consistent))
    if f.p_min is not None:
        keep &= _flags(pc.greater_equal(table["p_chosen"], f.p_min))
    if f.p_max is not None:
        keep &= _flags(pc.less_equal(table["p_chosen"], f.p_max))
    return keep


def _row(record: dict) -> dict:
    def text(messages) -> str:
        return messages[-1]["content"] if messages else ""

    return {"id": record["id"], "conversation": record["prompt"] or [], "chosen": text(record["chosen"]),
            "rejected": text(record["rejected"]), "p_chosen": record["p_chosen"], "votes": record["votes"] or [],
            "principle_ids": record["principle_ids"] or [], "position_consistent": record["position_consistent"]}


def read_page(files: list[Path], page: int, filters: Filters, size: int = PAGE_ROWS) -> dict:
    """Rows ``page * size`` .. of the rows matching ``filters``; ``{"rows", "total", "page", "pages",
    "principles"}`` (principles: every principle id the dataset's rows name)."""
    first, wanted = page * size, []  # wanted: (file index, row group, row in group)
    total, principles = 0, set()
    handles = [pq.ParquetFile(f) for f in files]
    try:
        for i, pf in enumerate(handles):
            for g in range(pf.metadata.num_row_groups):
                n = pf.metadata.row_group(g).num_rows
                part = pf.read_row_group(g, columns=FILTER_COLUMNS if filters.any else ["principle_ids"])
                principles.update(pc.unique(pc.list_flatten(part["principle_ids"])).to_pylist())
                if not filters.any:
                    lo, hi = max(first - total, 0), min(first + size - total, n)
                    wanted += [(i, g, r) for r in range(lo, hi)]
                    total += n
                    continue
                matches = np.flatnonzero(_mask(part, filters))
                lo, hi = max(first - total, 0), max(first + size - total, 0)
                wanted += [(i, g, int(r)) for r in matches[lo:hi]]
                total += len(matches)
        rows = []
        for i, g in dict.fromkeys((i, g) for i, g, _ in wanted):
            group = handles[i].read_row_group(g, columns=SHOWN)
            picks = [r for fi, gi, r in wanted if (fi, gi) == (i, g)]
            rows += [_row(rec) for rec in group.take(picks).to_pylist()]
    finally:
        for pf in handles:
            pf.close()
    return {"rows": rows, "total": total, "page": page, "pages": max(1, -(-total // size)),
            "principles": sorted(p for p in principles if p)}


def judge_files(run_dir: Path) -> list[Path]:
    """The preference shards of a job's judge stage (none when it has not written one)."""
    from plumbing.runs import shard_files

    return shard_files(run_dir / "judge", "train")
