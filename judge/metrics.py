"""Pure metric functions of judge evaluation: agreement, calibration, intervals.

No I/O and no engine here: every function takes plain numbers and returns plain numbers or a
small frozen record, so each is tested with hand-worked values (tests/test_judge_eval.py).

Conventions:

- A judge probability ``p`` is the probability that the human-*chosen* response is better
  (``p_first`` of a pair shown with the chosen response first). ``p > 0.5`` agrees with the
  human label, ``p < 0.5`` disagrees, ``p == 0.5`` (within ``TIE_EPS``) is a tie; ties and ``None`` (unscored)
  are left out of the denominator and counted separately, never read as 0 or 0.5.
- Proportions carry a Wilson score interval (Wilson 1927; recommended over the normal
  approximation for small n and extreme p by Brown, Cai & DasGupta 2001); statistics without
  a closed-form interval (ECE) carry a seeded percentile bootstrap (Efron & Tibshirani 1993).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

Z_95 = 1.959963984540054  # the 0.975 quantile of the standard normal
# Averaging p and 1 - p in floating point can land a hair off 0.5; that is still a tie.
TIE_EPS = 1e-9


@dataclass(frozen=True)
class Proportion:
    """``k`` successes out of ``n`` with a Wilson interval; ``value`` is ``None`` when ``n == 0``."""

    k: int
    n: int
    value: float | None
    lo: float | None
    hi: float | None
    method: str = "wilson"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Agreement:
    """Agreement of judge probabilities with human labels, with what was left out."""

    proportion: Proportion
    ties: int
    unscored: int

    def to_dict(self) -> dict:
        return {**self.proportion.to_dict(), "ties": self.ties, "unscored": self.unscored}


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of a reliability diagram: predictions in ``[lo, hi)`` (the last bin includes 1)."""

    lo: float
    hi: float
    n: int
    mean_predicted: float | None
    observed: float | None


def wilson_interval(k: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials.

    ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)`` with ``p = k/n``. Unlike the
    normal approximation it stays inside [0, 1] and is not degenerate at k = 0 or k = n.
    """
    if n <= 0:
        raise ValueError("wilson_interval needs n >= 1")
    if not 0 <= k <= n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n (got k={k}, n={n})")
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # At k = 0 (k = n) the bound is exactly 0 (1); rounding would otherwise leave it a hair off.
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def proportion(k: int, n: int) -> Proportion:
    if n == 0:
        return Proportion(k=0, n=0, value=None, lo=None, hi=None)
    lo, hi = wilson_interval(k, n)
    return Proportion(k=k, n=n, value=k / n, lo=lo, hi=hi)


def agreement(probs: Sequence[float | None]) -> Agreement:
    """Fraction of scored, non-tied probabilities above 0.5 (the judge sides with the human)."""
    unscored = sum(p is None for p in probs)
    scored = [p for p in probs if p is not None]
    decided = [p for p in scored if not is_tie(p)]
    ties = len(scored) - len(decided)
    return Agreement(proportion(sum(p > 0.5 for p in decided), len(decided)), ties=ties, unscored=unscored)


def is_tie(p: float) -> bool:
    return abs(p - 0.5) <= TIE_EPS


def bin_index(p: float, n_bins: int) -> int:
    """Equal-width bin of ``p`` in [0, 1]: ``[i/n, (i+1)/n)``, with 1.0 in the last bin."""
    return min(int(p * n_bins), n_bins - 1)


def reliability_bins(predicted: Sequence[float], outcomes: Sequence[int], n_bins: int = 10) -> list[ReliabilityBin]:
    """Per equal-width bin: how many predictions, their mean, and the observed frequency of 1."""
    if len(predicted) != len(outcomes):
        raise ValueError("predicted and outcomes must have the same length")
    members: list[list[int]] = [[] for _ in range(n_bins)]
    for i, p in enumerate(predicted):
        members[bin_index(p, n_bins)].append(i)
    out = []
    for b, idx in enumerate(members):
        n = len(idx)
        out.append(ReliabilityBin(
            lo=b / n_bins, hi=(b + 1) / n_bins, n=n,
            mean_predicted=sum(predicted[i] for i in idx) / n if n else None,
            observed=sum(outcomes[i] for i in idx) / n if n else None,
        ))
    return out


def ece(predicted: Sequence[float], outcomes: Sequence[int], n_bins: int = 10) -> float:
    """Expected calibration error (Naeini et al. 2015; Guo et al. 2017, arXiv 1706.04599):

    ``ECE = sum_b (|B_b| / N) * |mean(outcomes in B_b) - mean(predicted in B_b)|``
    over equal-width bins; empty bins contribute nothing.
    """
    if not predicted:
        raise ValueError("ece needs at least one prediction")
    total = len(predicted)
    return sum(b.n / total * abs(b.observed - b.mean_predicted)
               for b in reliability_bins(predicted, outcomes, n_bins) if b.n)


def paired_points(probs: Sequence[float]) -> tuple[list[float], list[int]]:
    """Calibration points of pairwise judgements: each pair gives ``(p, 1)`` and ``(1 - p, 0)``.

    Human labels have no "first" side, so a pair is a prediction about both of its responses:
    P(chosen is better) = p came true, P(rejected is better) = 1 - p did not. The diagram is
    then symmetric about (0.5, 0.5), and ECE over these points equals the top-label ECE of
    Guo et al. (confidence max(p, 1-p) against "the judge's pick is the human's"), while still
    spanning [0, 1] as a predicted-probability axis. Without this, every outcome would be 1.
    """
    predicted = [x for p in probs for x in (p, 1.0 - p)]
    outcomes = [x for _ in probs for x in (1, 0)]
    return predicted, outcomes


def paired_ece(probs: Sequence[float], n_bins: int = 10) -> float:
    return ece(*paired_points(probs), n_bins=n_bins)


def bootstrap_interval(values: Sequence, statistic: Callable[[list], float], *, resamples: int = 1000,
                       seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``values`` resampled with replacement.

    Seeded (``numpy.random.default_rng(seed)``), so the same inputs give the same interval.
    Resample the independent units (pairs), not derived points.
    """
    if not values:
        raise ValueError("bootstrap_interval needs at least one value")
    rng = np.random.default_rng(seed)
    n = len(values)
    stats = np.array([statistic([values[i] for i in rng.integers(0, n, size=n)]) for _ in range(resamples)])
    alpha = (1 - level) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)


def first_position_wins(votes_p_a: Sequence[float | None]) -> Proportion:
    """Fraction of scored, non-tied votes in which option (A) won, whichever response it was.

    With both orders shown equally often an unbiased judge is at 0.5; the distance from 0.5 is
    its position bias (Zheng et al. 2023, arXiv 2306.05685, section 3.3).
    """
    decided = [p for p in votes_p_a if p is not None and not is_tie(p)]
    return proportion(sum(p > 0.5 for p in decided), len(decided))
