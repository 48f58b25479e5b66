"""Batch calibration of the judge's option probabilities (Zhou et al., arXiv 2309.17249).

A judge that reads option letters has a position prior: it leans to (A) (or to (B)) whatever the
responses say. Batch calibration estimates that contextual prior from unlabelled inputs of the same
prompt template, with no labels and no extra forward pass. The paper's estimate is the MEAN of the class
PROBABILITIES over the inputs, and the calibrated score is log p - log p_hat, i.e. p divided by it:

    p_hat(A) = mean_i p_a(x_i),    p_hat(B) = mean_i (1 - p_a(x_i)) = 1 - p_hat(A),
    p_a_cal  = (p_a / p_hat(A)) / (p_a / p_hat(A) + (1 - p_a) / p_hat(B))
             = sigmoid(logit(p_a) - logit(p_hat(A)))

(the second line renormalises the two calibrated scores ``log p - log p_hat`` to sum 1).

Which inputs. Every scored vote of the RUN, both option orders together: the orders "ab" and "ba" are
two inputs of the same template (the pair's responses exchanged), so over both orders the responses'
own merits cancel and what is left is the position prior. A mean per order would not be: when the
pair's first response is better on average (eval's policy, judge-eval's human pick, a revision over its
draft), the "ab" mean holds that advantage and the "ba" mean its opposite, and dividing by them cancels
the real difference (tests/test_judge_layout.py::test_the_prior_keeps_a_real_difference_between_first_and_second).
The per-order means are still recorded, as a diagnostic of the position bias. With ``orders="one"``
there is one order, so the prior would be its mean and cancel the real difference: ``JudgeConfig`` refuses
``--orders one`` with ``--calibrate batch`` (a revise run's revision, better on every pair, was chosen
at 0.5 over its draft: tests/test_calibration_review.py).

Whole run, not per engine call: a label must not depend on the batch size or on where a resumed run
restarted, so the stages keep the raw votes until every pair is judged and estimate the prior once
(judge/calibrated_run.py); the prior is recorded in the run. Fewer than ``MIN_VOTES`` scored votes
give no prior: the votes stay as read and the record says why (``Prior.applied`` is False), so a lone
pair is never pulled to 0.5. Unscored votes (``p_a is None``) stay unscored and do not enter the mean;
a calibrated vote keeps the value read as ``p_a_raw``.

Worked example (tests/test_judge_layout.py::test_batch_calibration_hand_worked): nine votes read
p_a = 0.5 and one is saturated, p_a = 1 - 1e-16. The mean probability is (9 x 0.5 + 1) / 10 = 0.55,
logit 0.2007, so each undecided 0.5 calibrates to sigmoid(-0.2007) = 0.45 and the saturated vote stays
at 1. (A mean of log-odds, as this module once used, is (36.84 + 0) / 10 = 3.67 and turns every 0.5
into sigmoid(-3.67) = 0.025: one saturated vote outweighs nine undecided ones.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

# p_a of exactly 0 or 1 (an option far below the other in the top-k) has infinite log-odds; it is read
# this far from the edge (log-odds about +-36.8), so sigmoid(logit(p) - logit(p_hat)) stays finite.
P_EPS = 1e-16
MODES = ("none", "batch")
# Scored votes below which no prior is estimated. The prior is a mean of probabilities in [0, 1], so its
# standard error is at most 0.5 / sqrt(n) even for independent votes: 0.088 at 32 votes, a shift of up
# to 0.35 in log-odds at p_hat = 0.5. Fewer votes would move each label by the noise of a few others.
MIN_VOTES = 32


def log_odds(p: float) -> float:
    p = min(1.0 - P_EPS, max(P_EPS, p))
    return math.log(p) - math.log1p(-p)


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@dataclass(frozen=True)
class Prior:
    """The estimated position prior: ``p_a`` = P(A) averaged over ``votes`` scored votes (None when
    there are none), ``by_order`` = {order: {"p_a", "votes"}} (diagnostic only). ``applied`` is False
    when fewer than ``min_votes`` votes were scored; the votes are then left as read."""

    p_a: float | None
    votes: int
    by_order: dict = field(default_factory=dict)
    min_votes: int = MIN_VOTES

    @property
    def applied(self) -> bool:
        return self.p_a is not None and self.votes >= self.min_votes

    @property
    def reason(self) -> str | None:
        if self.applied:
            return None
        return (f"not calibrated: {self.votes} scored vote{'' if self.votes == 1 else 's'}, batch calibration "
                f"needs at least {self.min_votes}; the labels are the probabilities as read")

    def to_dict(self) -> dict:
        """What a run records (manifest, metrics): the prior, its log-odds, the counts, whether it was used."""
        return {"method": "batch calibration, arXiv 2309.17249: p_a / mean p_a over the whole run, renormalised",
                "p_a": self.p_a, "log_odds": None if self.p_a is None else log_odds(self.p_a),
                "votes": self.votes, "by_order": self.by_order, "min_votes": self.min_votes,
                "applied": self.applied, "reason": self.reason}

    @classmethod
    def from_dict(cls, d: dict) -> Prior:
        return cls(d["p_a"], d["votes"], dict(d.get("by_order") or {}), d["min_votes"])


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def estimate_prior(votes: Sequence, min_votes: int = MIN_VOTES) -> Prior:
    """The mean ``p_a`` over the scored votes (both orders together; module docstring)."""
    scored = [v for v in votes if v.p_a is not None]
    by_order = {}
    for order in sorted({v.order for v in scored}):
        ps = [v.p_a for v in scored if v.order == order]
        by_order[order] = {"p_a": _mean(ps), "votes": len(ps)}
    return Prior(_mean([v.p_a for v in scored]), len(scored), by_order, min_votes)


def calibrated(p_a: float, prior_p_a: float) -> float:
    """(p_a / p_hat) / (p_a / p_hat + (1 - p_a) / (1 - p_hat)), computed as a shift of log-odds."""
    return sigmoid(log_odds(p_a) - log_odds(prior_p_a))


def apply_prior(votes: Sequence, prior: Prior) -> list:
    """The votes with ``p_a`` calibrated by ``prior`` and ``p_a_raw`` the value read; the votes as they are
    when the prior is not applied. Votes must be raw: calibrating twice would divide by the prior twice."""
    if any(v.p_a_raw is not None for v in votes):
        raise ValueError("batch calibration needs raw votes; these are calibrated already")
    if not prior.applied:
        return list(votes)
    return [v if v.p_a is None else replace(v, p_a=calibrated(v.p_a, prior.p_a), p_a_raw=v.p_a) for v in votes]


def batch_calibrate(votes: Sequence, min_votes: int = MIN_VOTES) -> tuple[list, Prior]:
    """The votes calibrated by their own prior, and that prior."""
    prior = estimate_prior(votes, min_votes)
    return apply_prior(votes, prior), prior


def uncalibrated(votes: Sequence) -> list:
    """The votes as read: ``p_a`` back to ``p_a_raw`` where a vote was calibrated."""
    return [v if v.p_a_raw is None else replace(v, p_a=v.p_a_raw, p_a_raw=None) for v in votes]


def calibration_spec(mode: str) -> dict:
    """What a calibrated run adds to its hashed spec: how its prior is estimated, since that defines the
    labels (a run calibrated otherwise, e.g. per engine call, is not resumed as one of these)."""
    if mode != "batch":
        return {}
    return {"calibration": {"prior": "mean p_a over every scored vote of the run, both orders",
                            "min_votes": MIN_VOTES}}
