"""The files ``rlaif eval`` writes beside its rows: metrics.json, report.md and two plots.

Each file is written atomically (``plumbing.atomic``): a reader sees the old file or the new one, never a
torn one. report.md shows only numbers taken from metrics.json, formatted by ``judge.eval_report.fmt``
(three decimals) or as integers (tests/test_eval.py checks every number of the report against
metrics.json).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from judge.eval_report import fmt, fmt_interval
from plumbing import atomic

METRICS, REPORT = "metrics.json", "report.md"
PRINCIPLES_PNG, LENGTH_PNG = "win_rate_per_principle.png", "verdict_vs_length.png"
OUTPUTS = (METRICS, REPORT, PRINCIPLES_PNG, LENGTH_PNG)


def settings(config, inp, spec: dict) -> dict:
    """What the numbers were measured with (models, judge, sampling, input), for metrics.json and report.md."""
    from plumbing.runs import versions

    j = config.judge
    return {"prompts": str(config.prompts), "prompts_sha256": inp.sha256, "limit": config.limit,
            **{role: spec[role]["model"] for role in ("policy", "reference", "judge")},
            "engines": {role: spec[role]["engine"] for role in ("policy", "reference", "judge")},
            "sampling": spec["sampling"], "constitution": str(j.constitution or "built-in"),
            "constitution_sha256": spec["constitution_sha256"], "template_sha256": spec["template_sha256"],
            "principles_per_pair": j.principles_per_pair, "cot": j.cot, "judge_seed": j.seed, "calibrate": j.calibrate,
            "reward": config.reward, "resamples": config.resamples, "seed": config.seed, "versions": versions()}


def clear_outputs(run_dir: Path) -> None:
    """Remove the files of an earlier eval (``--overwrite``); the rows are cleared by RunWriter."""
    for name in OUTPUTS:
        (run_dir / name).unlink(missing_ok=True)


def write_outputs(run_dir: Path, result: dict, points: list[tuple[float, float]]) -> list[str]:
    """Plots, metrics.json, report.md; returns the names of the plots written. ``points``: (length
    difference, verdict) of each scored prompt."""
    images = []
    if plot_per_principle(result, run_dir / PRINCIPLES_PNG):
        images.append(PRINCIPLES_PNG)
    if plot_length(result, points, run_dir / LENGTH_PNG):
        images.append(LENGTH_PNG)
    atomic.write_text(run_dir / METRICS, json.dumps(result, indent=2) + "\n")
    atomic.write_text(run_dir / REPORT, render_report(result, images))
    return images


# --- report.md ------------------------------------------------------------------------------------


def _n(m: dict) -> str:
    return f"{m['n']} prompt{'' if m['n'] == 1 else 's'}" + (f" ({m['unscored']} unscored)" if m.get("unscored") else "")


def headline_rows(result: dict) -> list[tuple[str, dict, str, str]]:
    """(name, metric, n, method) of the headline table."""
    s, w, lc = result["settings"], result["win_rate"], result["length_controlled_win_rate"]
    rows = [("win-rate of the policy", w, _n(w), f"bootstrap over prompts ({w['resamples']}, seed {s['seed']})"),
            ("length-controlled win-rate", lc, _n(lc), "logistic fit at zero length difference, Wald (HC0)"),
            ("position consistency of the judge", result["position_consistency"],
             f"{result['position_consistency']['k']}/{result['position_consistency']['n']}", "Wilson")]
    acc = result["accuracy"]
    if acc:
        for role in ("policy", "reference"):
            m = acc[role]
            rows.append((f"{role} accuracy ({acc['reward']})", m, f"{m['k']}/{m['n']}" +
                         (f" ({m['unscored']} unscored)" if m["unscored"] else ""), "Wilson"))
    return rows


def _length_lines(result: dict) -> list[str]:
    L, lc = result["length"], result["length_controlled_win_rate"]
    c, fit = L["correlation"], lc.get("fit") or {}
    corr = (f"Pearson r = {fmt(c['pearson'])} (p = {fmt(c['pearson_p'])}), Spearman rho = {fmt(c['spearman'])} "
            f"(p = {fmt(c['spearman_p'])}), {c['n']} prompts" if c["reason"] is None else f"n/a: {c['reason']}")
    model = "n/a" if lc["value"] is None else (
        f"logit p = a + b tanh(d / sd) with a = {fmt(fit['intercept'])}, b = {fmt(fit['slope'])}, sd = {fmt(lc['sd'])}"
        if fit.get("slope") is not None else f"logit p = a with a = {fmt(fit['intercept'])} (every d is 0: intercept "
                                             f"only)")
    return ["", "## Length", "",
            "d = length of the policy's response minus the reference's, in characters.", "",
            f"- mean length: policy {fmt(L['mean_policy'])}, reference {fmt(L['mean_reference'])} characters "
            f"(tokens: {fmt(L['mean_policy_tokens'])} vs {fmt(L['mean_reference_tokens'])}); "
            f"mean d {fmt(L['mean_difference'])}",
            f"- correlation of the verdict with d: {corr}",
            f"- length-controlled fit (AlpacaEval-LC, arXiv 2404.04475): {model}"
            + ("" if lc["reason"] is None else f"; n/a: {lc['reason']}")]


def _calibration(mode: str, prior: dict | None) -> str:
    if prior is None:
        return mode
    if not prior["applied"]:
        return f"{mode}, {prior['reason']}"
    return (f"{mode}: each P(A) divided by the run's prior P(A) = {fmt(prior['p_a'])} (mean over {prior['votes']} "
            f"votes, both orders) and renormalised (arXiv 2309.17249)")


def render_report(result: dict, images: list[str]) -> str:
    s, w = result["settings"], result["win_rate"]
    lines = [f"# Win-rate: {s['policy']} vs {s['reference']}", "",
             f"{result['n_prompts']} prompts judged by `{s['judge']}` against the constitution, both option orders, "
             f"{s['principles_per_pair']} principle draws per prompt; {result['errors']} prompts failed "
             f"(errors.jsonl). The policy won {w['wins']}, lost {w['losses']} and tied {w['ties']} "
             f"({result['identical_responses']} prompts with identical responses). The win-rate is the mean of the "
             "judge's soft probability that the policy's response is better.", "",
             "| metric | value | 95% interval | n | method |", "|---|---|---|---|---|",
             *(f"| {name} | {fmt(m['value'])} | {fmt_interval(m)} | {n} | {method} |"
               for name, m, n, method in headline_rows(result)),
             *_length_lines(result),
             "", "## Per principle", "",
             "Each principle's own probability per prompt (both orders averaged); principles are drawn per prompt.",
             "", "| principle | win-rate | 95% interval | n | wins | losses | ties |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {pid} | {fmt(m['value'])} | {fmt_interval(m)} | {_n(m)} | {m['wins']} | {m['losses']} | "
              f"{m['ties']} |" for pid, m in result["per_principle"].items()]
    lines += [""] + [f"![{name}]({name})" for name in images]
    sam = s["sampling"]
    lines += ["", "## Settings", "",
              f"- policy `{s['policy']}`, reference `{s['reference']}`, judge `{s['judge']}` (engines "
              f"{s['engines']['policy']}, {s['engines']['reference']}, {s['engines']['judge']})",
              f"- sampling: temperature {sam['temperature']}, top-p {sam['top_p']}, max tokens {sam['max_tokens']}, "
              f"seed {sam['seed']}",
              f"- constitution `{s['constitution']}`, sha256 `{s['constitution_sha256']}`; judge templates sha256 "
              f"`{s['template_sha256']}`; CoT {s['cot']}, judge seed {s['judge_seed']}",
              f"- option positions: the policy's response was the pair's first (option (A) in order \"ab\") on "
              f"{result['policy_first']} of {result['n_prompts']} prompts, a coin per prompt (seed {s['seed']})",
              f"- calibration: {_calibration(s.get('calibrate', 'none'), result.get('calibration'))}",
              f"- prompts `{s['prompts']}` (sha256 `{s['prompts_sha256']}`), limit {s['limit']}, reward {s['reward']}",
              f"- versions: {', '.join(f'{k} {v}' for k, v in s['versions'].items())}", ""]
    return "\n".join(lines)


# --- plots ----------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display; safe on servers
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")


def plot_per_principle(result: dict, path: Path) -> bool:
    """Win-rate overall, length-controlled and per principle, with their 95 % intervals."""
    rows = [("overall", result["win_rate"]), ("length-controlled", result["length_controlled_win_rate"]),
            *result["per_principle"].items()]
    rows = [(name, m) for name, m in rows if m["value"] is not None]
    if not rows:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(rows) + 1.4))
    try:
        ys = list(range(len(rows)))[::-1]
        for y, (_, m) in zip(ys, rows, strict=True):
            err = None if m["lo"] is None else [[max(0.0, m["value"] - m["lo"])], [max(0.0, m["hi"] - m["value"])]]
            ax.errorbar([m["value"]], [y], xerr=err, fmt="o", capsize=3, color="C0" if y < len(rows) - 2 else "C3")
        ax.axvline(0.5, ls="--", color="grey")
        ax.set_yticks(ys, [f"{name} (n={m['n']})" for name, m in rows], fontsize=7)
        ax.set(xlim=(-0.02, 1.02), xlabel="win-rate of the policy vs the reference (95% interval)")
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)
    return True


def plot_length(result: dict, points: list[tuple[float, float]], path: Path) -> bool:
    """Each prompt's verdict against its length difference, with the fitted length-controlled curve."""
    if not points:
        return False
    plt = _pyplot()
    lc = result["length_controlled_win_rate"]
    fit = lc.get("fit") or {}
    fig, ax = plt.subplots(figsize=(6, 4))
    try:
        ax.scatter([d for d, _ in points], [p for _, p in points], s=12, alpha=0.7, label="prompts")
        if lc["value"] is not None and fit.get("slope") is not None and lc["sd"]:
            lo, hi = min(d for d, _ in points), max(d for d, _ in points)
            xs = [lo + (hi - lo) * k / 200 for k in range(201)]
            ys = [1 / (1 + math.exp(-(fit["intercept"] + fit["slope"] * math.tanh(x / lc["sd"])))) for x in xs]
            ax.plot(xs, ys, color="C3", label=f"logistic fit (LC win-rate {fmt(lc['value'])} at d = 0)")
        ax.axhline(0.5, ls="--", color="grey")
        ax.axvline(0, ls=":", color="grey")
        c = result["length"]["correlation"]
        r = "" if c["pearson"] is None else f" (Pearson r {fmt(c['pearson'])})"
        ax.set(ylim=(-0.02, 1.02), xlabel="length difference d, policy - reference (characters)",
               ylabel="P(policy better)", title=f"Verdict vs length difference{r}")
        ax.legend(loc="lower right", fontsize=7)
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)
    return True
