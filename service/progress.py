"""Per-stage progress of a job, read from its run folder: ``pipeline.json`` says which stages started and finished
and how long they took (pipeline/loop.py writes it before and after each stage), each stage's
``manifest.json`` its row counts so far (plumbing/runs.py updates them shard by shard)."""

from __future__ import annotations

import calendar
import json
import time
from pathlib import Path


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _since(stamp: str | None) -> float | None:
    try:
        return round(time.time() - calendar.timegm(time.strptime(stamp or "", "%Y-%m-%dT%H:%M:%SZ")), 1)
    except ValueError:
        return None


def stages(run_dir: Path, plan: list[dict], running: bool) -> dict[str, dict]:
    """``{stage: {"state": "pending|running|done", "seconds": s, "counts": {...}}}`` for each stage of the plan;
    a stage that started and did not finish is ``running`` only while the job runs."""
    recorded = _read_json(run_dir / "pipeline.json").get("stages")
    recorded = recorded if isinstance(recorded, dict) else {}
    out = {}
    for step in plan:
        name = step["stage"]
        rec = recorded.get(name) if isinstance(recorded.get(name), dict) else {}
        counts = _read_json(run_dir / name / "manifest.json").get("counts")
        if rec.get("finished"):
            state, seconds = "done", rec.get("seconds")
        elif rec.get("started") and running:
            state, seconds = "running", _since(rec.get("started"))
        else:
            state, seconds = "pending", None
        out[name] = {"state": state, "seconds": seconds, "counts": counts if isinstance(counts, dict) else {}}
    return out
