"""``rlaif judge-eval``: how well the constitution judge agrees with human preference labels.

Each HH-RLHF row (arXiv 2204.05862) is a human-chosen and a human-rejected reply to the same
conversation. The judge scores the pair with the chosen reply as the pair's *first* response,
in both option orders (``orders="both"``), so ``p_first`` = P(judge prefers the human's pick)
and position bias is visible in the votes. Measured, each with a 95 % interval:

* agreement: share of pairs with ``p_first > 0.5`` (ties and unscored pairs left out, counted);
* position consistency: share of pairs whose every principle picked the same reply in both orders;
* first-position win rate: share of votes in which option (A) won, whichever reply it was
  (0.5 = no position bias; Zheng et al. 2023, arXiv 2306.05685);
* calibration: ECE over 10 bins + reliability diagram (see ``metrics.paired_points``),
  bootstrap interval over pairs;
* per-principle agreement: each sampled principle's own order-averaged probability per pair.

Proportions use Wilson intervals, ECE a seeded percentile bootstrap (judge/metrics.py).
Outputs (report.md, metrics.json, pairs.jsonl, *.png) are built in a temp folder and each
renamed into ``--out``; bad input raises ``JudgeError`` before anything is written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from judge import metrics
from judge.config import JudgeConfig
from judge.errors import JudgeError

log = logging.getLogger(__name__)

REPORT, METRICS, PAIRS = "report.md", "metrics.json", "pairs.jsonl"
RELIABILITY_PNG, PRINCIPLES_PNG = "reliability.png", "per_principle.png"


class JudgeEvalConfig(BaseModel):
    """One judge evaluation: which human-labelled pairs, and the judge settings to evaluate."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    human: Path = Field(description="HH-RLHF-format file: rows {'chosen': transcript, 'rejected': transcript} "
                                    "(jsonl/json/parquet/csv, .gz ok).")
    out: Path = Field(description="Folder for report.md, metrics.json, pairs.jsonl and the plots.")
    offset: int = Field(0, ge=0, description="Skip this many rows of the human file first.")
    limit: int | None = Field(None, ge=1, description="Evaluate at most this many rows after the offset.")
    judge: JudgeConfig = Field(default_factory=JudgeConfig,
                               description="The judge settings under evaluation (model, principles, seed, ...).")
    n_bins: int = Field(10, ge=2, description="Equal-width bins of the ECE and the reliability diagram.")
    resamples: int = Field(1000, ge=100, description="Bootstrap resamples of the ECE interval (seeded by judge.seed).")

    @model_validator(mode="after")
    def _both_orders(self) -> JudgeEvalConfig:
        if self.judge.orders != "both":
            raise ValueError("judge-eval measures position bias, so the judge must score both orders "
                             "(set judge.orders to 'both')")
        return self


@dataclass(frozen=True)
class HumanPairs:
    pairs: list  # judge.scoring.Pair, the human-chosen reply first
    rows: int  # rows read in the [offset, offset + limit) window
    skipped: list[dict]  # {"row", "reason"}: rows that hold no comparable pair


def read_human_pairs(path: Path, offset: int = 0, limit: int | None = None) -> HumanPairs:
    """HH-RLHF rows -> pairs (chosen first). A file that is not in that format raises; a row
    whose two transcripts do not share the conversation is skipped with its reason."""
    from generator.inputs import BadItem, InputError, hh_split, read_rows
    from judge.scoring import Pair
    from plumbing.runs import item_id

    pairs, skipped, rows, index = [], [], 0, -1
    try:
        for index, row in enumerate(read_rows(path)):
            if index < offset:
                continue
            if limit is not None and rows >= limit:
                break
            rows += 1
            if isinstance(row, BadItem):
                raise JudgeError(f"{path}: {row.reason}; judge-eval needs one JSON object per line")
            if not (isinstance(row.get("chosen"), str) and isinstance(row.get("rejected"), str)):
                raise JudgeError(f"{path}: row {index} has no 'chosen'/'rejected' transcripts (keys: "
                                 f"{', '.join(map(str, row)) or 'none'}); judge-eval needs HH-RLHF rows "
                                 f"{{\"chosen\": \"\\n\\nHuman: ...\\n\\nAssistant: ...\", \"rejected\": ...}}")
            conversation, chosen = hh_split(row["chosen"])
            other, rejected = hh_split(row["rejected"])
            reason = ("no assistant reply to compare" if not (chosen.strip() and rejected.strip() and conversation)
                      else "chosen and rejected continue different conversations" if conversation != other
                      else "chosen and rejected are identical" if chosen == rejected else None)
            if reason:
                skipped.append({"row": index, "reason": reason})
                continue
            pairs.append(Pair(item_id(conversation, chosen, rejected), conversation, chosen, rejected))
    except InputError as e:
        raise JudgeError(str(e)) from None
    if rows == 0:
        raise JudgeError(f"{path}: --offset {offset} is beyond the end of the file ({index + 1} rows)"
                         if index + 1 > 0 or offset else f"{path}: the file holds no rows")
    if not pairs:
        raise JudgeError(f"{path}: none of the {rows} rows holds a comparable pair ({skipped[0]['reason']})")
    return HumanPairs(pairs, rows, skipped)


def _judge_all(engine, constitution, pairs: list, config: JudgeConfig, report: Callable[[int, int], None]) -> list:
    """Judge in chunks of ``batch_size`` pairs to report progress. Chunking does not change
    any verdict: principles are drawn per (seed, pair id) in ``Constitution.sample_principles``."""
    from judge.scoring import judge_pairs
    from plumbing.batching import iter_batches

    verdicts = []
    report(0, len(pairs))
    for chunk in iter_batches(pairs, config.batch_size):
        verdicts.extend(judge_pairs(engine, constitution, chunk, config))
        report(len(verdicts), len(pairs))
        log.info("judge-eval: %d/%d pairs judged", len(verdicts), len(pairs))  # progress where no bar shows
    return verdicts


def compute_metrics(verdicts: list, *, n_bins: int = 10, resamples: int = 1000, seed: int = 0) -> dict:
    """All metrics of a list of ``PairVerdict`` whose pairs have the human-chosen reply first."""
    from judge.scoring import principle_probability

    probs = [v.p_first for v in verdicts]
    scored = [p for p in probs if p is not None]
    votes_p_a = [vote.p_a for v in verdicts for vote in v.votes]
    per_principle: dict[str, list[float | None]] = {}
    for v in verdicts:
        for pid in v.principle_ids:
            own = [vote for vote in v.votes if vote.principle_id == pid]
            per_principle.setdefault(pid, []).append(principle_probability(own))
    calibration: dict = {"n_pairs": len(scored), "n_bins": n_bins, "method": "bootstrap", "resamples": resamples,
                         "value": None, "lo": None, "hi": None, "bins": []}
    if scored:
        lo, hi = metrics.bootstrap_interval(scored, lambda s: metrics.paired_ece(s, n_bins), resamples=resamples,
                                            seed=seed)
        bins = metrics.reliability_bins(*metrics.paired_points(scored), n_bins=n_bins)
        calibration.update(value=metrics.paired_ece(scored, n_bins), lo=lo, hi=hi,
                           bins=[b.__dict__ for b in bins])
    consistent = [v.position_consistent for v in verdicts if v.position_consistent is not None]
    return {
        "n_pairs": len(verdicts),
        "unscored": sum(p is None for p in probs),
        "agreement": metrics.agreement(probs).to_dict(),
        "position_consistency": {**metrics.proportion(sum(consistent), len(consistent)).to_dict(),
                                 "undetermined": len(verdicts) - len(consistent)},
        "first_position_win_rate": {**metrics.first_position_wins(votes_p_a).to_dict(),
                                    "unscored_votes": sum(p is None for p in votes_p_a)},
        "calibration": calibration,
        "per_principle": {pid: metrics.agreement(ps).to_dict() for pid, ps in sorted(per_principle.items())},
    }


def run_judge_eval(config: JudgeEvalConfig, progress: Callable[[int, int], None] | None = None,
                   engine=None) -> dict:
    """Judge the human pairs, compute the metrics, write the outputs; returns metrics.json's content.

    ``progress(done, total)`` is called per chunk of pairs (the CLI's bar); ``engine`` overrides
    the one ``config.judge`` names (tests)."""
    from constitution import DEFAULT_PATH
    from generator.models import display_name
    from judge.build import load_constitution, make_judge_engine
    from judge.scoring import templates_used
    from plumbing.hashing import file_sha256
    from plumbing.runs import versions
    from prompts import template_sha256

    if config.out.exists() and not config.out.is_dir():
        raise JudgeError(f"--out {config.out} is a file; give a folder")
    human = read_human_pairs(config.human, config.offset, config.limit)
    jc = config.judge
    constitution = load_constitution(jc.constitution)
    settings = {
        "human_file": str(config.human), "human_sha256": file_sha256(config.human),
        "offset": config.offset, "limit": config.limit, "rows": human.rows, "skipped_rows": human.skipped,
        "model": display_name(jc.model), "engine": jc.engine,
        "constitution": str(jc.constitution or DEFAULT_PATH), "constitution_sha256": constitution.sha256(),
        "template_sha256": template_sha256(templates_used(jc), jc.templates),
        "judge": jc.model_dump(mode="json", exclude={"input", "out", "limit", "overwrite", "base_urls"}),
        "n_bins": config.n_bins, "resamples": config.resamples, "versions": versions(),
    }
    own_engine = engine is None
    if own_engine:
        engine = make_judge_engine(jc)
    try:
        verdicts = _judge_all(engine, constitution, human.pairs, jc, progress or (lambda done, total: None))
    finally:
        if own_engine:
            engine.close()
    result = {**compute_metrics(verdicts, n_bins=config.n_bins, resamples=config.resamples, seed=jc.seed),
              "settings": settings}
    write_outputs(config.out, result, human.pairs, verdicts)
    return result


def _pair_record(pair, verdict) -> dict:
    return {"id": pair.id, "p_first": verdict.p_first, "position_consistent": verdict.position_consistent,
            "principle_ids": list(verdict.principle_ids), "reason": verdict.reason,
            "votes": [vote.to_record() for vote in verdict.votes]}


def write_outputs(out: Path, result: dict, pairs: list, verdicts: list) -> None:
    """Build every file in a temp folder beside ``out``, then rename each into ``out``:
    a reader never sees a half-written file, and a failure leaves ``out`` as it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        plot_reliability(result["calibration"], tmp / RELIABILITY_PNG)
        files = [RELIABILITY_PNG]
        if result["per_principle"]:
            plot_per_principle(result["per_principle"], tmp / PRINCIPLES_PNG)
            files.append(PRINCIPLES_PNG)
        (tmp / METRICS).write_text(json.dumps(result, indent=2) + "\n")
        (tmp / PAIRS).write_text("".join(json.dumps(_pair_record(p, v)) + "\n"
                                         for p, v in zip(pairs, verdicts, strict=True)))
        (tmp / REPORT).write_text(render_report(result, files))
        out.mkdir(exist_ok=True)
        for name in (*files, METRICS, PAIRS, REPORT):  # report last: it points at the others
            os.replace(tmp / name, out / name)
        if PRINCIPLES_PNG not in files:  # an earlier evaluation's plot would contradict this report
            (out / PRINCIPLES_PNG).unlink(missing_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
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
    rows = [("agreement with human label", agree, f"{agree['k']}/{agree['n']}", "Wilson"),
            ("position consistency", cons, f"{cons['k']}/{cons['n']}", "Wilson"),
            ("first-position (A) win rate", first, f"{first['k']}/{first['n']} votes", "Wilson"),
            (f"ECE ({cal['n_bins']} bins)", cal, f"{cal['n_pairs']} pairs",
             f"bootstrap ({cal['resamples']}, seed {result['settings']['judge']['seed']})")]
    return [{"name": name, "value": fmt(m.get("value")), "interval": fmt_interval(m), "n": n, "method": method}
            for name, m, n, method in rows]


def render_report(result: dict, images: list[str]) -> str:
    """report.md: the headline table, per-principle table, settings and the plots."""
    s, cal = result["settings"], result["calibration"]
    lines = [
        f"# Judge evaluation: {s['model']} vs human labels", "",
        f"{result['n_pairs']} pairs from `{s['human_file']}` (rows {s['offset']}..{s['offset'] + s['rows'] - 1}; "
        f"{len(s['skipped_rows'])} rows skipped), {result['unscored']} unscored pairs, "
        f"{result['agreement']['ties']} ties. "
        "Intervals are 95 %: Wilson for proportions, percentile bootstrap over pairs for the ECE.", "",
        "| metric | value | 95% interval | n | method |", "|---|---|---|---|---|",
        *(f"| {r['name']} | {r['value']} | {r['interval']} | {r['n']} | {r['method']} |" for r in headline_rows(result)),
        "", "## Per principle", "",
        "Each principle's own probability per pair (mean over both orders); principles are sampled per pair.", "",
        "| principle | agreement | 95% interval | n | ties | unscored |", "|---|---|---|---|---|---|",
    ]
    for pid, m in result["per_principle"].items():
        lines.append(f"| {pid} | {fmt(m['value'])} | {fmt_interval(m)} | {m['k']}/{m['n']} | {m['ties']} | "
                     f"{m['unscored']} |")
    lines += ["", "## Calibration", "",
              "Each pair contributes P(chosen better) = p (outcome 1) and P(rejected better) = 1 - p (outcome 0); "
              "the diagram is symmetric and its ECE equals the top-label ECE (arXiv 1706.04599).", "",
              "| bin | n | mean predicted | observed |", "|---|---|---|---|"]
    lines += [f"| [{b['lo']:.1f}, {b['hi']:.1f}{']' if b['hi'] >= 1 else ')'} | {b['n']} | "
              f"{fmt(b['mean_predicted'])} | {fmt(b['observed'])} |" for b in cal["bins"]]
    lines += [""] + [f"![{name}]({name})" for name in images]
    j = s["judge"]
    lines += ["", "## Settings", "",
              f"- model: `{s['model']}` (engine {s['engine']})",
              f"- constitution: `{s['constitution']}`, sha256 `{s['constitution_sha256']}`",
              f"- judge template sha256 `{s['template_sha256']}`",
              f"- principles per pair {j['principles_per_pair']}, orders {j['orders']}, CoT {j['cot']}, "
              f"seed {j['seed']}, top-k {j['top_k']}",
              f"- human file sha256 `{s['human_sha256']}`, offset {s['offset']}, limit {s['limit']}",
              f"- versions: {', '.join(f'{k} {v}' for k, v in s['versions'].items())}", ""]
    return "\n".join(lines)


def plot_reliability(calibration: dict, path: Path) -> None:
    """Reliability diagram (observed frequency per bin vs the diagonal) over a count histogram."""
    import matplotlib

    matplotlib.use("Agg")  # no display; safe in threads and on servers
    import matplotlib.pyplot as plt

    bins = calibration["bins"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=(3, 1), sharex=True)
    try:
        width = 1.0 / calibration["n_bins"]
        centres = [b["lo"] + width / 2 for b in bins]
        top.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
        full = [(c, b) for c, b in zip(centres, bins, strict=True) if b["n"]]
        top.bar([c for c, _ in full], [b["observed"] for _, b in full], width=width * 0.9, alpha=0.7,
                label="observed frequency")
        top.plot([b["mean_predicted"] for _, b in full], [b["observed"] for _, b in full], "o", color="black",
                 markersize=3, label="(mean predicted, observed)")
        for c, b in full:
            top.annotate(f"n={b['n']}", (c, b["observed"]), ha="center", va="bottom", fontsize=7)
        ece_txt = "n/a" if calibration["value"] is None else f"{calibration['value']:.3f}"
        top.set(ylim=(0, 1.1), ylabel="observed frequency", title=f"Reliability (ECE {ece_txt})")
        top.legend(loc="upper left", fontsize=7)
        bottom.bar(centres, [b["n"] for b in bins], width=width * 0.9, color="grey")
        bottom.set(xlim=(0, 1), xlabel="predicted probability", ylabel="count")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def plot_per_principle(per_principle: dict, path: Path) -> None:
    """Per-principle agreement with Wilson intervals (principles without a decided pair are omitted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
