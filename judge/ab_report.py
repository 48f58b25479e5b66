"""The outputs of ``rlaif constitution ab``: metrics.json, report.md, pairs.jsonl, flips.jsonl, manifest.json,
plots.

``--out`` holds the outputs and, by default, the vote cache (``cache/``, judge/ab_cache.py), which must
outlive a re-run with ``--overwrite``; so the outputs are replaced file by file (each written to a temp
name and renamed, plumbing/atomic.py), never the folder. ``manifest.json`` (``"stage": "constitution-ab"``)
is written last and lists the files: it marks the folder as an ab output, so ``--overwrite`` replaces it,
and only it (plumbing/runs.py ``check_out_dir``), and a file a user put beside the outputs is left alone.
While files are being replaced the manifest says ``"status": "writing"``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from judge.ab_cache import CACHE
from judge.errors import JudgeError
from judge.eval_report import _pyplot, fmt, fmt_interval

log = logging.getLogger(__name__)

STAGE = "constitution-ab"  # the manifest's stage: what marks a folder as an ab output
REPORT, METRICS, PAIRS, FLIPS, MANIFEST = "report.md", "metrics.json", "pairs.jsonl", "flips.jsonl", "manifest.json"
AGREEMENT_PNG, PAIRS_PNG = "agreement.png", "pairs.png"
REPORT_FLIPS = 50  # flipped pairs listed in report.md (flips.jsonl has them all)


def check_out(out: Path, overwrite: bool) -> str:
    """"new" or "replace"; refuses anything but an empty folder or an earlier ab output (that one only with
    ``overwrite``). A folder holding only a vote cache (and logs) is what a first run killed before its
    outputs leaves: it is ours, and its votes are reused."""
    from judge.ab_cache import is_cache_dir
    from plumbing.logs import LOGS
    from plumbing.runs import check_out_dir

    if out.is_dir() and not (out / MANIFEST).exists():
        names = {p.name for p in out.iterdir()}
        if CACHE in names and names <= {CACHE, LOGS} and is_cache_dir(out / CACHE):
            return "new"
    mode = check_out_dir(out, STAGE, overwrite=overwrite)
    if mode == "resume":
        raise JudgeError(f"--out {out} holds an earlier constitution ab output; pass --overwrite to replace it (its "
                         f"vote cache is kept and reused) or choose another folder")
    return mode


def principle_status(a, b, ids, renamed: dict[str, str] | None = None) -> dict[str, str]:
    """Each judged principle id -> "unchanged", "changed: <what>", "added", "removed", "renamed from <old id>"
    or "renamed to <new id>" (OLD -> NEW; ``renamed``: new id -> old id, judge/ab.py ``renames``). What
    changed: the principle's own fields, ``variables.<name>`` for a variable its compare text uses (in either
    file) whose value differs, and ``few_shot`` when the judge's worked comparisons differ (in every prompt):
    each changes what the judge reads for this principle even where its own text is the same."""
    from constitution import diff
    from prompts import undeclared_variables

    d = diff(a, b)
    names = set(a.variables) | set(b.variables)
    changed_vars = {n for n in names if a.variables.get(n) != b.variables.get(n)}
    few_shot = ["few_shot"] if a.few_shot_compare() != b.few_shot_compare() else []
    renamed = renamed or {}
    status = {}
    for pid in dict.fromkeys([p.id for p in a.principles] + [p.id for p in b.principles]):
        if ids is not None and pid not in ids:
            continue
        if pid in renamed or pid in renamed.values():
            status[pid] = (f"renamed from {renamed[pid]}" if pid in renamed
                           else f"renamed to {next(n for n, o in renamed.items() if o == pid)}")
            continue
        if pid in d.added or pid in d.removed:
            status[pid] = "added" if pid in d.added else "removed"
            continue
        used = undeclared_variables(a.principle(pid).compare) | undeclared_variables(b.principle(pid).compare)
        what = [*d.changed.get(pid, []), *(f"variables.{n}" for n in sorted(used & changed_vars)), *few_shot]
        status[pid] = f"changed: {', '.join(what)}" if what else "unchanged"
    return status


def settings(config, a, b, human, label: str, identity: dict, template_sha256: str, cache_dir: Path,
             renamed: dict[str, str]) -> dict:
    from constitution import diff
    from plumbing.hashing import file_sha256
    from plumbing.runs import read_manifest, versions

    d = diff(a, b)
    jc = config.judge
    source_sha = (read_manifest(config.human).get("spec_sha256") if config.human.is_dir()
                  else file_sha256(config.human))
    return {
        "old": str(config.old), "old_sha256": a.sha256(), "new": str(config.new), "new_sha256": b.sha256(),
        "diff": {"added": d.added, "removed": d.removed, "changed": d.changed, "meta": d.meta,
                 "reordered": d.reordered, "renamed": renamed},
        "human_file": str(config.human), "human_sha256": source_sha, "labels": label, "limit": config.limit,
        "rows": human.rows, "skipped_rows": human.skipped, "principles": config.principles or "all",
        "judge": identity, "principles_per_pair": jc.principles_per_pair, "seed": jc.seed,
        "templates": jc.templates, "template_sha256": template_sha256, "cache": str(cache_dir),
        "sampling": "exponential race per draw, seeded by (seed, pair id, principle id, draw index); a principle "
                    "only renamed keeps its old id's draws",
        "n_bins": config.n_bins, "resamples": config.resamples, "versions": versions(),
    }


# --- writing ---------------------------------------------------------------------------------------


def write_outputs(out: Path, result: dict, rows: list[dict]) -> None:
    """Replace the outputs in ``out`` file by file (module docstring), the manifest last; ``rows`` are
    pairs.jsonl's records (``ab_stats.pair_rows``)."""
    from plumbing import atomic
    from plumbing.logs import attach_run_log
    from plumbing.runs import read_manifest, versions

    check_out(out, overwrite=True)  # still empty, ours, or an earlier ab output, just before writing
    out.mkdir(parents=True, exist_ok=True)
    old = read_manifest(out) if (out / MANIFEST).is_file() else None
    if old is not None:
        atomic.write_text(out / MANIFEST, json.dumps({**old, "status": "writing"}, indent=2) + "\n")
    images = plot_agreement(result, out / AGREEMENT_PNG)
    plot_pairs(result, rows, out / PAIRS_PNG)
    images.append(PAIRS_PNG)
    atomic.write_text(out / METRICS, json.dumps(result, indent=2) + "\n")
    atomic.write_text(out / PAIRS, "".join(json.dumps(r) + "\n" for r in rows))
    atomic.write_text(out / FLIPS, "".join(json.dumps(f) + "\n" for f in result["flips"]))
    atomic.write_text(out / REPORT, render_report(result, images))
    files = sorted([*images, METRICS, PAIRS, FLIPS, REPORT])
    for name in (old or {}).get("files", []):
        stale = out / str(name)
        if name not in files and stale.parent == out and stale.is_file():
            stale.unlink()
    s = result["settings"]
    manifest = {"stage": STAGE, "status": "complete", "files": files, "old": s["old"], "new": s["new"],
                "human_file": s["human_file"], "model": s["judge"]["model"], "cache": s["cache"],
                "versions": versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic.write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    attach_run_log(out)  # the command line's log goes into the output now that it is ours (plumbing/logs.py)
    log.info("constitution ab: wrote %s", out)


# --- report ----------------------------------------------------------------------------------------


def _cell(m: dict | None) -> str:
    if not m or m.get("value") is None:
        return "n/a"
    n = f" ({m['k']}/{m['n']})" if "k" in m else ""
    return f"{fmt(m['value'])} {fmt_interval(m)}{n}"


def _diff(m: dict) -> str:
    d = m["difference"]
    return "n/a" if d["value"] is None else f"{d['value']:+.3f} {fmt_interval(d)} (n={d['n']})"


def fmt_p(p: float | None) -> str:
    """A p-value to 3 significant digits: a small one stays readable (1.19e-07), never 0.000."""
    return "n/a" if p is None else f"{p:.3g}"


def _order_cell(p: dict) -> str:
    return f"{fmt(p['pair'])} ({fmt(p['ab'])} / {fmt(p['ba'])})"


def headline(result: dict) -> list[str]:
    a, b, paired, base = result["a"], result["b"], result["paired"], result["baseline_longer_wins"]
    mc, kappa = paired["mcnemar"], paired["kappa"]
    return [
        "| metric | A (OLD) | B (NEW) |", "|---|---|---|",
        f"| agreement with the label (Wilson) | {_cell(a['agreement'])} | {_cell(b['agreement'])} |",
        f"| position consistency (Wilson) | {_cell(a['position_consistency'])} | {_cell(b['position_consistency'])} |",
        f"| first-position (A) win rate | {_cell(a['first_position_win_rate'])} | "
        f"{_cell(b['first_position_win_rate'])} |",
        f"| top-label ECE ({a['calibration']['n_bins']} bins, bootstrap) | {_cell(a['calibration'])} | "
        f"{_cell(b['calibration'])} |",
        f"| unscored pairs | {a['unscored']} | {b['unscored']} |",
        "", "| paired comparison (pairs decided under both) | value | 95% interval | n |", "|---|---|---|---|",
        f"| agreement B - A | {_diff(paired)} | bootstrap over pairs ({paired['difference']['resamples']}) | "
        f"{paired['n_paired']} ({paired['left_out']} left out) |",
        f"| McNemar exact p (right under A only / B only) | {fmt_p(mc['pvalue'])} | {mc['a_only']} / {mc['b_only']} | "
        f"{mc['a_only'] + mc['b_only']} discordant |",
        f"| Cohen's kappa, A's picks vs B's | {fmt(kappa['value'])} | {fmt_interval(kappa)} (asymptotic) | "
        f"{paired['n_paired']} |",
        f"| flipped pairs: to the label / from it | {paired['flips']['to_label']} / {paired['flips']['from_label']} "
        f"| | {paired['n_paired']} |",
        "", f"Baseline, \"the longer response wins\" (characters): agreement {_cell(base)}, "
            f"{base['ties']} equal lengths left out.",
    ]


def per_principle_lines(result: dict) -> list[str]:
    lines = ["| principle | status | pairs A / B | agreement A | agreement B | B - A (paired) | kappa | "
             "McNemar p (A only / B only) |", "|---|---|---|---|---|---|---|---|"]
    for pid, m in result["per_principle"].items():
        mc = m["mcnemar"]
        lines.append(f"| {pid} | {m['status']} | {m['pairs_a']} / {m['pairs_b']} | {_cell(m['a'])} | {_cell(m['b'])} | "
                     f"{_diff(m)} | {fmt(m['kappa']['value'])} | {fmt_p(mc['pvalue'])} ({mc['a_only']} / "
                     f"{mc['b_only']}) |")
    return lines


def flip_lines(result: dict) -> list[str]:
    flipped = result["flips"]
    if not flipped:
        return ["No pair changed its pick."]
    lines = [f"{len(flipped)} pairs changed their pick (all in `{FLIPS}`"
             + (f"; the first {REPORT_FLIPS} here" if len(flipped) > REPORT_FLIPS else "") + "). p = P(the labelled "
             "reply is better): the pair's ensemble, then each order alone (ab: labelled reply shown as (A) / ba).", "",
             "| pair | direction | principles A | principles B | p under A (ab / ba) | p under B (ab / ba) |",
             "|---|---|---|---|---|---|"]
    for f in flipped[:REPORT_FLIPS]:
        lines.append(f"| {f['id']} | {f['direction'].replace('_', ' ')} | {', '.join(f['principles_a'])} | "
                     f"{', '.join(f['principles_b'])} | {_order_cell(f['under_a'])} | {_order_cell(f['under_b'])} |")
    return lines


def render_report(result: dict, images: list[str]) -> str:
    s, c = result["settings"], result["cost"]
    d = s["diff"]
    renamed = d.get("renamed", {})
    changes = [*(f"renamed {old} to {new}" for new, old in renamed.items()),
               *(f"added {p}" for p in d["added"] if p not in renamed),
               *(f"removed {p}" for p in d["removed"] if p not in renamed.values()),
               *(f"changed {p} ({', '.join(f)})" for p, f in d["changed"].items()),
               *(f"changed {f}" for f in d["meta"])]
    lines = [
        f"# Constitution A/B: `{s['old']}` (A) vs `{s['new']}` (B)", "",
        f"{result['n_pairs']} labelled pairs from `{s['human_file']}` (label: {s['labels']}; "
        f"{len(s['skipped_rows'])} rows skipped), judged by `{s['judge']['model']}` under both constitutions, both "
        f"orders, {s['principles_per_pair']} principles per pair drawn identically for a principle in both files. "
        f"Edit: {'; '.join(changes) or 'none (the two files judge alike)'}.", "",
        *headline(result), "", "## Per principle", "",
        "Each principle's own probability per pair (mean over its orders), on the pairs that drew it; the paired "
        "columns use the pairs that drew it under both constitutions.", "", *per_principle_lines(result),
        "", "## Flipped pairs", "", *flip_lines(result), "", "## Cost", "",
        f"{c['fresh_votes']} fresh judge calls of {c['distinct_votes']} distinct votes ({c['cached_votes']} from the "
        f"cache, {c['too_long_votes']} prompts too long for the engine's context; A needs {c['votes_a']}, B "
        f"{c['votes_b']}), {c['fresh_prompt_tokens']} fresh prompt tokens; engine "
        f"start {c['engine_load_seconds']:.1f} s, judging {c['judge_seconds']:.1f} s, total {c['total_seconds']:.1f} s.",
        "", *(f"![{name}]({name})" for name in images), "", "## Settings", "",
        f"- A: `{s['old']}` sha256 `{s['old_sha256']}`; B: `{s['new']}` sha256 `{s['new_sha256']}`",
        f"- judge: {', '.join(f'{k} {v}' for k, v in s['judge'].items())}; seed {s['seed']}; principles "
        f"{s['principles'] if s['principles'] == 'all' else ', '.join(s['principles'])}",
        f"- principle draws: {s['sampling']}",
        f"- judge templates `{s['templates'] or 'built-in'}`, sha256 `{s['template_sha256']}`",
        f"- labelled pairs sha256 `{s['human_sha256']}`, limit {s['limit']}; vote cache `{s['cache']}`",
        f"- versions: {', '.join(f'{k} {v}' for k, v in s['versions'].items())}", ""]
    return "\n".join(lines)


# --- plots -----------------------------------------------------------------------------------------


def _errorbars(ax, pts: list[tuple[float, dict]], **style) -> None:
    """Points (value, y) with their 95 % intervals (none drawn where an interval is undefined)."""
    if not pts:
        return
    below = [m["value"] - m["lo"] if m.get("lo") is not None else 0.0 for _, m in pts]
    above = [m["hi"] - m["value"] if m.get("hi") is not None else 0.0 for _, m in pts]
    ax.errorbar([m["value"] for _, m in pts], [y for y, _ in pts], xerr=[[max(0.0, x) for x in below],
                                                                       [max(0.0, x) for x in above]],
                capsize=2, markersize=4, **style)


def plot_agreement(result: dict, path: Path) -> list[str]:
    """Left: agreement under A and B with Wilson intervals, overall and per principle, beside the longer-response
    baseline. Right: the paired difference B - A with its bootstrap interval. Returns [the file name]."""
    plt = _pyplot()
    rows = [("overall", result["a"]["agreement"], result["b"]["agreement"], result["paired"]["difference"])]
    rows += [(pid, m["a"] or {}, m["b"] or {}, m["difference"]) for pid, m in result["per_principle"].items()]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 0.35 * len(rows) + 1.6), sharey=True)
    try:
        ys = list(range(len(rows)))[::-1]
        for shift, col, name in ((0.15, 1, "A (OLD)"), (-0.15, 2, "B (NEW)")):
            pts = [(y + shift, r[col]) for y, r in zip(ys, rows, strict=True) if r[col].get("value") is not None]
            _errorbars(left, pts, fmt="o", label=name)
        base = result["baseline_longer_wins"]["value"]
        if base is not None:
            left.axvline(base, ls=":", color="black", label="longer response wins")
        left.axvline(0.5, ls="--", color="grey")
        left.set(xlim=(-0.02, 1.02), xlabel="agreement with the label (95% Wilson)")
        left.set_yticks(ys, [r[0] for r in rows], fontsize=7)
        left.legend(fontsize=7, loc="lower left")
        pts = [(y, r[3]) for y, r in zip(ys, rows, strict=True) if r[3]["value"] is not None]
        _errorbars(right, pts, fmt="s", color="C2")
        right.axvline(0.0, ls="--", color="grey")
        right.set(xlim=(-1.02, 1.02), xlabel="agreement B - A, paired (95% bootstrap)")
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)
    return [path.name]


def plot_pairs(result: dict, rows: list[dict], path: Path) -> None:
    """Every pair's p under A against p under B (grey), the flipped ones coloured: a pair that crosses a 0.5
    line changed its pick."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    try:
        both = [(r["under_a"]["pair"], r["under_b"]["pair"]) for r in rows
                if r["under_a"]["pair"] is not None and r["under_b"]["pair"] is not None]
        ax.scatter([x for x, _ in both], [y for _, y in both], s=8, color="lightgrey", label=f"pairs ({len(both)})")
        for direction, colour in (("to_label", "C2"), ("from_label", "C3")):
            pts = [(f["under_a"]["pair"], f["under_b"]["pair"]) for f in result["flips"] if f["direction"] == direction]
            ax.scatter([x for x, _ in pts], [y for _, y in pts], s=14, color=colour,
                       label=f"flipped {direction.replace('_', ' ')} ({len(pts)})")
        ax.axvline(0.5, ls="--", color="grey")
        ax.axhline(0.5, ls="--", color="grey")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="p under A (labelled reply better)", ylabel="p under B",
               title="Pairs under A and B")
        ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)


def _save(fig, path: Path) -> None:
    from plumbing.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
