"""Batch calibration of the judge's option probabilities (Zhou et al., arXiv 2309.17249).

A judge that reads option letters has a position prior: it leans to (A) (or to (B)) whatever the
responses say. Batch calibration estimates that prior from the batch itself, with no labels and no
extra forward pass: for each option order ("ab", "ba") separately, the mean log-odds of (A) over the
batch's scored votes,

    m_o = mean_{votes of order o} log(p_a / (1 - p_a)),

is the prior, and each vote's log-odds is shifted by it before the orders are combined:

    p_a_cal = sigmoid(log(p_a / (1 - p_a)) - m_o).

(The paper estimates the prior as the batch mean of the class probabilities and divides by it; with
two options, subtracting the mean log-odds is the same correction in log-odds space, and it leaves
the calibrated batch with mean log-odds 0 in each order.) Unscored votes (``p_a is None``) are left
as they are and do not enter the mean. The raw value stays on the vote as ``p_a_raw``.

Worked example (tests/test_judge_layout.py::test_batch_calibration_hand_worked): order "ab"
votes p_a = 0.8, 0.5 have log-odds 1.386 and 0, mean 0.693 (= log 2); calibrated p_a =
sigmoid(0.693) = 2/3 and sigmoid(-0.693) = 1/3. An "ba" vote alone in its order calibrates to 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

# p_a of exactly 0 or 1 (an option far below the other in the top-k) has infinite log-odds; it is
# read as this far from the edge (log-odds about +-36.8), so one such vote cannot make the mean infinite.
P_EPS = 1e-16
MODES = ("none", "batch")


def log_odds(p: float) -> float:
    p = min(1.0 - P_EPS, max(P_EPS, p))
    return math.log(p) - math.log1p(-p)


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def position_prior(votes: Sequence) -> dict[str, float]:
    """Per order, the mean log-odds of (A) over the scored votes (orders without one are absent)."""
    by_order: dict[str, list[float]] = {}
    for v in votes:
        if v.p_a is not None:
            by_order.setdefault(v.order, []).append(log_odds(v.p_a))
    return {order: sum(xs) / len(xs) for order, xs in by_order.items()}


def batch_calibrate(votes: Sequence) -> list:
    """The votes with ``p_a`` calibrated by the batch's per-order prior and ``p_a_raw`` the value read.
    Votes must be raw (``p_a_raw is None``): calibrating twice would subtract the prior twice."""
    if any(v.p_a_raw is not None for v in votes):
        raise ValueError("batch_calibrate needs raw votes; these are calibrated already")
    prior = position_prior(votes)
    return [v if v.p_a is None else replace(v, p_a=sigmoid(log_odds(v.p_a) - prior[v.order]), p_a_raw=v.p_a)
            for v in votes]


def uncalibrated(votes: Sequence) -> list:
    """The votes as read: ``p_a`` back to ``p_a_raw`` where a vote was calibrated."""
    return [v if v.p_a_raw is None else replace(v, p_a=v.p_a_raw, p_a_raw=None) for v in votes]
