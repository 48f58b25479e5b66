"""Which pairs to judge among N responses, and Bradley-Terry ranking for best-vs-worst.

``all``: every unordered pair (i < j), N(N-1)/2 rows per prompt.

``best-worst``: all pairs are judged, a Bradley-Terry model P(i beats j) = s_i / (s_i + s_j)
is fitted to the soft verdicts, and the best vs the worst response is the one output row.
The fit is Hunter's MM algorithm (Ann. Statist. 32(1), 2004) with soft outcomes: a verdict
p = P(i beats j) counts as p wins for i and 1 - p for j, and each step sets

    s_i <- W_i / sum_{j compared with i} n_ij / (s_i + s_j)

(W_i = soft wins of i, n_ij = verdicts between i and j), then rescales log s to mean 0.
Probabilities are clipped to [1e-3, 1 - 1e-3] so that a 0/1 verdict cannot send a score to
0 or infinity (the MM iteration needs every response to win and lose a little).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

P_CLIP = 1e-3


def all_pairs(n: int) -> list[tuple[int, int]]:
    """Every unordered pair of n responses, in a fixed order: (0,1), (0,2), ..., (n-2, n-1)."""
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def bradley_terry(n: int, outcomes: Sequence[tuple[int, int, float]], iters: int = 500,
                  tol: float = 1e-10) -> list[float | None]:
    """Log-strengths of n items from soft outcomes ``(i, j, P(i beats j))`` (None for an item
    that was never compared). Scores are centred: their mean over compared items is 0."""
    wins = [0.0] * n
    count: dict[tuple[int, int], float] = {}
    for i, j, p in outcomes:
        p = min(1.0 - P_CLIP, max(P_CLIP, float(p)))
        wins[i] += p
        wins[j] += 1.0 - p
        key = (min(i, j), max(i, j))
        count[key] = count.get(key, 0.0) + 1.0
    rated = sorted({k for pair in count for k in pair})
    if not rated:
        return [None] * n
    s = dict.fromkeys(rated, 1.0)
    neighbours: dict[int, list[tuple[int, float]]] = {i: [] for i in rated}
    for (i, j), c in count.items():
        neighbours[i].append((j, c))
        neighbours[j].append((i, c))
    for _ in range(iters):
        new = {i: wins[i] / sum(c / (s[i] + s[j]) for j, c in neighbours[i]) for i in rated}
        mean_log = sum(math.log(v) for v in new.values()) / len(new)
        new = {i: v / math.exp(mean_log) for i, v in new.items()}
        delta = max(abs(math.log(new[i]) - math.log(s[i])) for i in rated)
        s = new
        if delta < tol:
            break
    return [math.log(s[i]) if i in s else None for i in range(n)]


def best_worst(scores: Sequence[float | None]) -> tuple[int, int] | None:
    """(index of the best, index of the worst) among rated items; ties go to the lower index.
    None when fewer than two items are rated."""
    rated = [i for i, x in enumerate(scores) if x is not None]
    if len(rated) < 2:
        return None
    best = max(rated, key=lambda i: (scores[i], -i))
    worst = min((i for i in rated if i != best), key=lambda i: (scores[i], i))
    return best, worst


def bt_probability(score_i: float, score_j: float) -> float:
    """P(i beats j) under the fitted model: s_i / (s_i + s_j) = sigmoid(log s_i - log s_j)."""
    return 1.0 / (1.0 + math.exp(score_j - score_i))
