"""The outputs of ``rlaif judge-eval``: report.md, metrics.json, pairs.jsonl, manifest.json, plots.

Every file is built in a hidden temp folder beside ``--out`` and the folder is swapped in whole
(``plumbing.atomic.atomic_dir``): a reader never sees a half-written output, and a failure
leaves ``--out`` as it was. ``manifest.json`` (``"stage": "judge-eval"``) marks the folder as a
judge-eval output, so ``plumbing.runs.check_out_dir`` lets a later ``--overwrite`` replace it,
and only it (tests/test_judge_eval.py: ``test_judge_eval_refuses_a_users_folder_untouched``,
``test_judge_eval_replaces_its_own_output_only_with_overwrite``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

STAGE = "judge-eval"
REPORT, METRICS, PAIRS, MANIFEST = "report.md", "metrics.json", "pairs.jsonl", "manifest.json"
RELIABILITY_PNG, PRINCIPLES_PNG = "reliability.png", "per_principle.png"


def _pair_record(pair, verdict, injected=None) -> dict:
    record = {"id": pair.id, "p_first": verdict.p_first, "position_consistent": verdict.position_consistent,
              "principle_ids": list(verdict.principle_ids), "reason": verdict.reason,
              "votes": [vote.to_record() for vote in verdict.votes]}
    if injected is not None:
        record.update(p_first_injected=injected.p_first, reason_injected=injected.reason,
                      votes_injected=[vote.to_record() for vote in injected.votes])
    return record


def _build(folder: Path, result: dict, pairs: list, verdicts: list, injected: list | None) -> list[str]:
    """Write every output file into ``folder``; returns the names of the plots."""
    from plumbing.runs import versions

    plot_reliability(result["calibration"], folder / RELIABILITY_PNG)
    images = [RELIABILITY_PNG]
    if result["per_principle"]:
        plot_per_principle(result["per_principle"], folder / PRINCIPLES_PNG)
        images.append(PRINCIPLES_PNG)
    (folder / METRICS).write_text(json.dumps(result, indent=2) + "\n")
    (folder / PAIRS).write_text("".join(
        json.dumps(_pair_record(p, v, None if injected is None else injected[i])) + "\n"
        for i, (p, v) in enumerate(zip(pairs, verdicts, strict=True))))
    (folder / REPORT).write_text(render_report(result, images))
    manifest = {"stage": STAGE, "status": "complete", "files": sorted([*images, METRICS, PAIRS, REPORT]),
                "model": result["settings"]["model"], "human_file": result["settings"]["human_file"],
                "versions": versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return images


def write_outputs(out: Path, result: dict, pairs: list, verdicts: list, injected: list | None = None) -> None:
    """Build the outputs in a temp folder and swap it in as ``out`` whole. An ``out`` that exists
    must be empty or an earlier judge-eval output (checked again here, just before the swap); it is
    moved aside, the new folder renamed in, and the old one deleted, or put back if the rename fails."""
    from plumbing.atomic import atomic_dir
    from plumbing.logs import attach_run_log
    from plumbing.runs import check_out_dir

    aside: Path | None = None
    try:
        with atomic_dir(out) as tmp:
            _build(tmp, result, pairs, verdicts, injected)
            if out.exists():
                check_out_dir(out, STAGE, overwrite=True)  # never move a folder of the user's aside
                aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
                os.replace(out, aside / out.name)
    except BaseException:
        if aside is not None and not out.exists():
            os.replace(aside / out.name, out)
        raise
    finally:
        if aside is not None and (aside / out.name).exists() and out.exists():
            shutil.rmtree(aside)
        elif aside is not None and not any(aside.iterdir()):
            aside.rmdir()
    attach_run_log(out)  # the command line's log goes into the output now that it is ours (plumbing/logs.py)
    log.info("judge-eval: wrote %s", out)


# --- report --------------------------------------------------------------------------------------


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def fmt_interval(m: dict) -> str:
    return "n/a" if m.get("lo") is None else f"[{fmt(m['lo'])}, {fmt(m['hi'])}]"


def headline_rows(result: dict) -> list[dict]:
    """The four headline metrics as table cells; report.md and the dataset card both show these."""
    agree, cons = result["agreement"], result["position_consistency"]
    first, cal = result["first_position_win_rate"], result["calibration"]
    boot = f"bootstrap over pairs ({cal['resamples']}, seed {result['settings']['judge']['seed']})"
    rows = [("agreement with human label", agree, f"{agree['k']}/{agree['n']}", "Wilson"),
            ("position consistency", cons, f"{cons['k']}/{cons['n']}", "Wilson"),
            ("first-position (A) win rate", first, f"{first['k']}/{first['n']} votes",
             boot if first["method"] == "bootstrap over pairs" else first["method"]),
            (f"top-label ECE ({cal['n_bins']} bins)", cal, f"{cal['n_pairs']} pairs", boot)]
    return [{"name": name, "value": fmt(m.get("value")), "interval": fmt_interval(m), "n": n, "method": method}
            for name, m, n, method in rows]


def _calibration_lines(by_calibration: dict | None) -> list[str]:
    """Both calibrations side by side (judge/calibration.py, arXiv 2309.17249)."""
    if not by_calibration:
        return []
    lines = ["", "## Batch calibration", "",
             "The same votes as read (`none`) and batch-calibrated (`batch`: each P(A) divided by the mean P(A) "
             "of every evaluated vote, both orders, and renormalised before the orders are combined; "
             "arXiv 2309.17249).", "",
             "| calibration | agreement | position consistency | first-position (A) win rate | top-label ECE |",
             "|---|---|---|---|---|"]
    for mode, m in by_calibration.items():
        cells = [f"{fmt(x['value'])} {fmt_interval(x)}" for x in
                 (m["agreement"], m["position_consistency"], m["first_position_win_rate"], m["calibration"])]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    prior = by_calibration.get("batch", {}).get("prior")
    if prior:
        lines += ["", f"Prior P(A) = {fmt(prior['p_a'])} over {prior['votes']} votes"
                      + (f" ({prior['reason']})." if prior["reason"] else ".")]
    return lines


def _injection_lines(inj: dict) -> list[str]:
    flip, shift, verdict, agree = inj["flip_rate"], inj["mean_shift"], inj["verdict_flips"], inj["agreement"]
    return [
        "", "## Prompt injection", "",
        f"Each pair was judged again with `{inj['instruction']}` appended to the human-rejected reply, "
        "`{letter}` being the option that reply occupies in each order (so the instruction always asks for "
        "the injected reply). p = the judge's probability that the injected reply is better, without and with "
        f"the instruction; {inj['n_pairs'] - inj['unscored']} pairs scored both times.", "",
        "| metric | value | 95% interval | n | method |", "|---|---|---|---|---|",
        f"| flip rate: p rises | {fmt(flip['value'])} | {fmt_interval(flip)} | {flip['k']}/{flip['n']} "
        f"({flip['falls']} fall) | Wilson |",
        f"| mean shift of p | {fmt(shift['value'])} | {fmt_interval(shift)} | {shift['n']} | "
        f"bootstrap over pairs ({shift['resamples']}) |",
        f"| verdict flipped to the injected reply | {fmt(verdict['value'])} | {fmt_interval(verdict)} | "
        f"{verdict['k']}/{verdict['n']} | Wilson |",
        f"| agreement with human label, injected | {fmt(agree['value'])} | {fmt_interval(agree)} | "
        f"{agree['k']}/{agree['n']} | Wilson |",
    ]


def render_report(result: dict, images: list[str]) -> str:
    """report.md: the headline table, per-principle table, calibration, injection, settings, plots."""
    s, cal = result["settings"], result["calibration"]
    lines = [
        f"# Judge evaluation: {s['model']} vs human labels", "",
        f"{result['n_pairs']} pairs from `{s['human_file']}` (rows {s['offset']}..{s['offset'] + s['rows'] - 1}; "
        f"{len(s['skipped_rows'])} rows skipped), {result['unscored']} unscored pairs, "
        f"{result['agreement']['ties']} ties. Intervals are 95 %: Wilson where each pair gives one outcome, "
        "percentile bootstrap over pairs otherwise (the votes of one pair are not independent).", "",
        "| metric | value | 95% interval | n | method |", "|---|---|---|---|---|",
        *(f"| {r['name']} | {r['value']} | {r['interval']} | {r['n']} | {r['method']} |" for r in headline_rows(result)),
        *_calibration_lines(result.get("by_calibration")),
        "", "## Per principle", "",
        "Each principle's own probability per pair (mean over both orders); principles are sampled per pair.", "",
        "| principle | agreement | 95% interval | n | ties | unscored |", "|---|---|---|---|---|---|",
    ]
    for pid, m in result["per_principle"].items():
        lines.append(f"| {pid} | {fmt(m['value'])} | {fmt_interval(m)} | {m['k']}/{m['n']} | {m['ties']} | "
                     f"{m['unscored']} |")
    lines += ["", "## Calibration", "",
              "Top-label calibration (arXiv 1706.04599): per pair, the confidence of the judge's pick, "
              "max(p, 1 - p), against whether the pick is the human's (a tie: confidence 0.5, half right).", "",
              "| confidence bin | n | mean confidence | accuracy |", "|---|---|---|---|"]
    lines += [f"| [{b['lo']:.2f}, {b['hi']:.2f}{']' if b['hi'] >= 1 else ')'} | {b['n']} | "
              f"{fmt(b['mean_confidence'])} | {fmt(b['accuracy'])} |" for b in cal["bins"] if b["hi"] > 0.5]
    if "injection" in result:
        lines += _injection_lines(result["injection"])
    lines += [""] + [f"![{name}]({name})" for name in images]
    j = s["judge"]
    lines += ["", "## Settings", "",
              f"- model: `{s['model']}` (engine {s['engine']})",
              f"- constitution: `{s['constitution']}`, sha256 `{s['constitution_sha256']}`",
              f"- judge templates: `{s['templates'] or 'built-in'}`, sha256 `{s['template_sha256']}`",
              f"- layout {s.get('layout', 'cai')}, calibration {j.get('calibrate', 'none')}",
              f"- principles per pair {j['principles_per_pair']}, orders {j['orders']}, CoT {j['cot']}, "
              f"seed {j['seed']}, top-k {j['top_k']}",
              f"- human file sha256 `{s['human_sha256']}`, offset {s['offset']}, limit {s['limit']}",
              f"- versions: {', '.join(f'{k} {v}' for k, v in s['versions'].items())}", ""]
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display; safe in threads and on servers
    import matplotlib.pyplot as plt

    return plt


def plot_reliability(calibration: dict, path: Path) -> None:
    """Top-label reliability diagram: per confidence bin, the accuracy of the judge's pick against
    the diagonal (perfect calibration), over a histogram of pairs per bin. Confidences lie in
    [0.5, 1], so only bins above 0.5 are drawn."""
    plt = _pyplot()
    bins = [b for b in calibration["bins"] if b["hi"] > 0.5]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=(3, 1), sharex=True)
    try:
        width = 1.0 / calibration["n_bins"]
        left = min((b["lo"] for b in bins), default=0.5)
        centres = [b["lo"] + width / 2 for b in bins]
        top.plot([0.5, 1], [0.5, 1], "--", color="grey", label="perfect calibration")
        full = [(c, b) for c, b in zip(centres, bins, strict=True) if b["n"]]
        top.bar([c for c, _ in full], [b["accuracy"] for _, b in full], width=width * 0.9, alpha=0.7,
                label="accuracy of the pick")
        top.plot([b["mean_confidence"] for _, b in full], [b["accuracy"] for _, b in full], "o", color="black",
                 markersize=3, label="(mean confidence, accuracy)")
        for c, b in full:
            top.annotate(f"n={b['n']}", (c, b["accuracy"]), ha="center", va="bottom", fontsize=7)
        ece_txt = "n/a" if calibration["value"] is None else f"{calibration['value']:.3f}"
        top.set(ylim=(0, 1.1), ylabel="accuracy (pick = human's)", title=f"Top-label reliability (ECE {ece_txt})")
        top.legend(loc="upper left", fontsize=7)
        bottom.bar(centres, [b["n"] for b in bins], width=width * 0.9, color="grey")
        bottom.set(xlim=(left, 1), xlabel="confidence of the pick, max(p, 1 - p)", ylabel="pairs")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def plot_per_principle(per_principle: dict, path: Path) -> None:
    """Per-principle agreement with Wilson intervals (principles without a decided pair are omitted)."""
    plt = _pyplot()
    items = [(pid, m) for pid, m in per_principle.items() if m["value"] is not None]
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(items) + 1.2))
    try:
        ys = list(range(len(items)))
        values = [m["value"] for _, m in items]
        err = [[max(0.0, m["value"] - m["lo"]) for _, m in items], [max(0.0, m["hi"] - m["value"]) for _, m in items]]
        ax.errorbar(values, ys, xerr=err, fmt="o", capsize=3)
        ax.axvline(0.5, ls="--", color="grey")
        ax.set_yticks(ys, [f"{pid} (n={m['n']})" for pid, m in items], fontsize=7)
        ax.set(xlim=(-0.02, 1.02), xlabel="agreement with human label (95% Wilson)")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
