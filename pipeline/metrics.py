"""The metrics.json the loop writes for the stages whose command writes none (generate, revise, judge), read from
their run directories, so that every number of the report (pipeline/report.py) has one source; the align and eval
stages write theirs themselves."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from plumbing.atomic import write_text

LABEL_BINS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
EXAMPLES = 3  # preference rows quoted in the judge's metrics.json and the report


def write_metrics(folder: str | Path, metrics: dict) -> None:
    write_text(Path(folder) / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def _run_counts(stage: str, folder: str | Path):
    """(metrics common to a run directory: its counts, rows and model; its rows)."""
    from plumbing.runs import load, read_manifest

    manifest = read_manifest(folder)
    rows = load(folder)
    return {"stage": stage, "counts": manifest.get("counts", {}), "rows": rows.num_rows,
            "model": manifest.get("spec", {}).get("model")}, rows


def generate_metrics(folder: str | Path) -> dict:
    """Counts of a generate run and its number of responses."""
    out, rows = _run_counts("generate", folder)
    if rows.num_rows:
        out["responses"] = sum(len(r) for r in rows["responses"])
    return out


def revise_metrics(folder: str | Path) -> dict:
    """Counts of a revise run and the share of rows whose final revision differs from the first response."""
    out, rows = _run_counts("revise", folder)
    if rows.num_rows:
        changed = sum(r["revisions"][-1].strip() != r["init_response"].strip() for r in rows if r["revisions"])
        out["revised_differs_share"] = round(changed / rows.num_rows, 4)
    return out


def judge_metrics(folder: str | Path, load_constitution=None) -> dict:
    """The judge's label distribution (p_chosen histogram), position consistency and a few example rows.
    ``load_constitution`` reads the constitution the run recorded (default: constitution.load_constitution)."""
    from plumbing.runs import load, read_manifest

    if load_constitution is None:
        from constitution import load_constitution
    manifest = read_manifest(folder)
    rows = load(folder)
    p = [x for x in rows["p_chosen"] if x is not None] if rows.num_rows else []
    consistent = [x for x in rows["position_consistent"] if x is not None] if rows.num_rows else []
    hist = [0] * (len(LABEL_BINS) - 1)
    for x in p:
        hist[min(int(x * 10), 9)] += 1
    examples = [{"prompt": r["prompt"][-1]["content"], "chosen": r["chosen"][0]["content"],
                 "rejected": r["rejected"][0]["content"], "p_chosen": round(r["p_chosen"], 3)}
                for r in rows.select(range(min(EXAMPLES, rows.num_rows)))]
    const_file = ((manifest.get("runtimes") or [{}])[-1]).get("constitution")
    const = load_constitution(const_file) if const_file and Path(const_file).is_file() else None
    used = Counter(pid for ids in (rows["principle_ids"] if rows.num_rows else []) for pid in ids)
    return {"stage": "judge", "counts": manifest.get("counts", {}), "rows": rows.num_rows,
            "constitution": {"name": const.name, "version": const.version, "sha256": const.sha256()} if const else None,
            "principles_used": dict(sorted(used.items())),
            "model": manifest.get("spec", {}).get("model"),
            "p_chosen_mean": round(sum(p) / len(p), 4) if p else None,
            "p_chosen_histogram": {"bins": list(LABEL_BINS), "counts": hist},
            "position_consistency": round(sum(consistent) / len(consistent), 4) if consistent else None,
            "position_consistent_rows": sum(consistent), "rows_with_both_orders": len(consistent),
            "examples": examples}
