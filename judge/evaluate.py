"""``rlaif judge-eval``: how well the constitution judge agrees with human preference labels.

Each HH-RLHF row (arXiv 2204.05862) is a human-chosen and a human-rejected reply to the same
conversation. The judge scores the pair with the chosen reply as the pair's *first* response,
in both option orders (``orders="both"``), so ``p_first`` = P(judge prefers the human's pick)
and position bias is visible in the votes. Measured, each with a 95 % interval
(judge/metrics.py says which interval and why):

* agreement: share of pairs with ``p_first > 0.5`` (ties and unscored pairs left out, counted);
* position consistency: share of pairs whose every principle picked the same reply in both orders;
* first-position win rate: share of votes in which option (A) won, whichever reply it was
  (0.5 = no position bias; Zheng et al. 2023, arXiv 2306.05685), its interval bootstrapped over pairs;
* calibration: top-label ECE over 10 bins + reliability diagram (Guo et al., arXiv 1706.04599);
* per-principle agreement: each sampled principle's own order-averaged probability per pair;
* ``by_calibration``: agreement, position consistency, first-position win rate and ECE both for the
  probabilities as read (``none``) and batch-calibrated (``batch``, arXiv 2309.17249: by the prior of
  ALL the evaluated pairs' votes, as ``rlaif judge --calibrate batch`` labels a run; judge/calibration.py),
  the ``batch`` entry with its ``prior``. The judge is run once, uncalibrated; calibration is a post-hoc
  division of the stored votes by the prior. The prior pools both orders, so the human pick always being
  the pair's first response does not enter it. The other metrics follow ``judge.calibrate`` (with
  ``inject``, the injected verdicts are calibrated by their own prior);
* with ``inject``: the same pairs judged again with an instruction injected into the rejected
  reply (judge/injection.py), and how far it moves the verdict (``metrics.injection_effect``).

This module reads the human pairs and runs the judge; judge/eval_report.py writes the outputs.
The ``--out`` folder is checked before any model loads (``plumbing.runs.check_out_dir``: an
empty folder or an earlier judge-eval output, the latter replaced only with ``overwrite``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from judge import metrics
from judge.config import JudgeConfig
from judge.errors import JudgeError

# publish/upload.py reads the output names and the headline table from here.
from judge.eval_report import METRICS, PRINCIPLES_PNG, RELIABILITY_PNG, STAGE, headline_rows, write_outputs

__all__ = ["METRICS", "PRINCIPLES_PNG", "RELIABILITY_PNG", "STAGE", "HumanPairs", "JudgeEvalConfig",
           "compute_metrics", "headline_rows", "read_human_pairs", "run_judge_eval"]

log = logging.getLogger(__name__)


class JudgeEvalConfig(BaseModel):
    """One judge evaluation: which human-labelled pairs, and the judge settings to evaluate."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    human: Path = Field(description="HH-RLHF-format file: rows {'chosen': transcript, 'rejected': transcript} "
                                    "(jsonl/json/parquet/csv, .gz ok).")
    out: Path = Field(description="Folder for report.md, metrics.json, pairs.jsonl, manifest.json and the plots: "
                                  "new, empty, or an earlier judge-eval output (replaced only with overwrite).")
    overwrite: bool = Field(False, description="Replace an earlier judge-eval output in `out` (never anything else).")
    offset: int = Field(0, ge=0, description="Skip this many rows of the human file first.")
    limit: int | None = Field(None, ge=1, description="Evaluate at most this many rows after the offset.")
    judge: JudgeConfig = Field(default_factory=JudgeConfig,
                               description="The judge settings under evaluation (model, principles, seed, ...).")
    inject: bool = Field(False, description="Also judge every pair with an instruction injected into the "
                                            "rejected reply and report how far it moves the verdict.")
    n_bins: int = Field(10, ge=2, description="Equal-width bins of the ECE and the reliability diagram.")
    resamples: int = Field(1000, ge=100, description="Bootstrap resamples of the intervals over pairs "
                                                     "(seeded by judge.seed).")

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
    from judge.scoring import Pair
    from plumbing.inputs import BadItem, InputError, hh_split, read_rows
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


def _judge_all(engine, constitution, pairs: list, config: JudgeConfig, report: Callable[[int, int], None],
               inject: bool) -> tuple[dict, list | None, object]:
    """Judge in chunks of ``batch_size`` pairs to report progress (with ``inject``, each chunk is also
    judged with the instruction injected). Chunking does not change any verdict: principles are drawn
    per (seed, pair id) in ``Constitution.sample_principles``, and the calibration prior is estimated
    once over every pair. Returns ``{"none": verdicts, "batch": calibrated}``, the injected verdicts
    (calibrated when ``config.calibrate`` is "batch") and the prior."""
    from judge.injection import judge_injected
    from judge.scoring import calibrate_verdicts, judge_pairs
    from plumbing.batching import iter_batches

    verdicts: list = []
    injected: list | None = [] if inject else None
    report(0, len(pairs))
    for chunk in iter_batches(pairs, config.batch_size):
        verdicts.extend(judge_pairs(engine, constitution, chunk, config))
        if injected is not None:
            injected.extend(judge_injected(engine, constitution, chunk, config))
        report(len(verdicts), len(pairs))
        log.info("judge-eval: %d/%d pairs judged", len(verdicts), len(pairs))  # progress where no bar shows
    calibrated, prior = calibrate_verdicts(verdicts)
    if injected is not None and config.calibrate == "batch":
        injected, _ = calibrate_verdicts(injected)
    return {"none": verdicts, "batch": calibrated}, injected, prior


def calibration_summary(verdicts: list, *, n_bins: int = 10, resamples: int = 1000, seed: int = 0) -> dict:
    """Agreement, position consistency, first-position win rate and top-label ECE of one calibration."""
    full = compute_metrics(verdicts, n_bins=n_bins, resamples=resamples, seed=seed)
    return {k: full[k] for k in ("agreement", "position_consistency", "first_position_win_rate", "calibration")}


def _rejected_probability(verdicts: list) -> list[float | None]:
    """P(the rejected, i.e. second, response is better) per pair."""
    return [None if v.p_first is None else 1.0 - v.p_first for v in verdicts]


def compute_metrics(verdicts: list, *, n_bins: int = 10, resamples: int = 1000, seed: int = 0,
                    injected: list | None = None) -> dict:
    """All metrics of a list of ``PairVerdict`` whose pairs have the human-chosen reply first;
    ``injected`` (same pairs, instruction in the rejected reply) adds the "injection" block."""
    from judge.scoring import principle_probability

    probs = [v.p_first for v in verdicts]
    per_principle: dict[str, list[float | None]] = {}
    for v in verdicts:
        for pid in dict.fromkeys(v.principle_ids):  # a principle drawn twice is one judgement of the pair
            own = [vote for vote in v.votes if vote.principle_id == pid]
            per_principle.setdefault(pid, []).append(principle_probability(own))
    consistent = [v.position_consistent for v in verdicts if v.position_consistent is not None]
    votes_per_pair = [[vote.p_a for vote in v.votes] for v in verdicts]
    result = {
        "n_pairs": len(verdicts),
        "unscored": sum(p is None for p in probs),
        "agreement": metrics.agreement(probs).to_dict(),
        "position_consistency": {**metrics.proportion(sum(consistent), len(consistent)).to_dict(),
                                 "undetermined": len(verdicts) - len(consistent)},
        "first_position_win_rate": {
            **metrics.first_position_wins(votes_per_pair, resamples=resamples, seed=seed).to_dict(),
            "unscored_votes": sum(p is None for ps in votes_per_pair for p in ps), "resamples": resamples},
        "calibration": metrics.calibration([p for p in probs if p is not None], n_bins=n_bins,
                                           resamples=resamples, seed=seed),
        "per_principle": {pid: metrics.agreement(ps).to_dict() for pid, ps in sorted(per_principle.items())},
    }
    if injected is not None:
        from judge.injection import INSTRUCTION

        result["injection"] = {
            "instruction": INSTRUCTION, "target": "rejected",
            **metrics.injection_effect(_rejected_probability(verdicts), _rejected_probability(injected),
                                       resamples=resamples, seed=seed),
            "agreement": metrics.agreement([v.p_first for v in injected]).to_dict(),
        }
    return result


def _settings(config: JudgeEvalConfig, human: HumanPairs, constitution) -> dict:
    from constitution import path_or_default
    from generator.models import display_name
    from judge.scoring import templates_used
    from plumbing.hashing import file_sha256
    from plumbing.runs import versions
    from prompts import template_sha256

    jc = config.judge
    return {
        "human_file": str(config.human), "human_sha256": file_sha256(config.human),
        "offset": config.offset, "limit": config.limit, "rows": human.rows, "skipped_rows": human.skipped,
        "model": display_name(jc.model), "engine": jc.engine,
        "constitution": str(path_or_default(jc.constitution)), "constitution_sha256": constitution.sha256(),
        "templates": jc.templates, "template_sha256": template_sha256(templates_used(jc), jc.templates),
        "judge": jc.model_dump(mode="json", exclude={"input", "out", "limit", "overwrite", "base_urls"}),
        "layout": jc.resolved_layout,
        "inject": config.inject, "n_bins": config.n_bins, "resamples": config.resamples, "versions": versions(),
    }


def run_judge_eval(config: JudgeEvalConfig, progress: Callable[[int, int], None] | None = None,
                   engine=None) -> dict:
    """Judge the human pairs, compute the metrics, write the outputs; returns metrics.json's content.

    ``progress(done, total)`` is called per chunk of pairs (the CLI's bar); ``engine`` overrides
    the one ``config.judge`` names (tests). The output folder, the human file, the constitution and
    the templates are all checked before the engine is made."""
    from judge.build import load_constitution, make_judge_engine
    from plumbing.runs import check_out_dir

    if check_out_dir(config.out, STAGE, overwrite=config.overwrite) == "resume":
        raise JudgeError(f"--out {config.out} holds an earlier judge-eval output; pass --overwrite to replace it "
                         f"or choose another folder")
    human = read_human_pairs(config.human, config.offset, config.limit)
    jc = config.judge
    constitution = load_constitution(jc.constitution)
    settings = _settings(config, human, constitution)
    own_engine = engine is None
    if own_engine:
        engine = make_judge_engine(jc)
    try:
        by_calibration, injected, prior = _judge_all(engine, constitution, human.pairs, jc,
                                                     progress or (lambda done, total: None), config.inject)
    finally:
        if own_engine:
            engine.close()
    verdicts = by_calibration[jc.calibrate]
    opts = {"n_bins": config.n_bins, "resamples": config.resamples, "seed": jc.seed}
    result = {**compute_metrics(verdicts, injected=injected, **opts),
              "by_calibration": {mode: {**calibration_summary(vs, **opts), **({"prior": prior.to_dict()}
                                                                               if mode == "batch" else {})}
                                 for mode, vs in by_calibration.items()},
              "settings": settings}
    write_outputs(config.out, result, human.pairs, verdicts, injected)
    return result
