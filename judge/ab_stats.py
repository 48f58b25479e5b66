"""The statistics of ``rlaif constitution ab``: two constitutions' verdicts on the SAME pairs, compared.

Pure functions of plain numbers (no engine, no I/O), each tested with hand-worked values in
tests/test_constitution_ab.py. Conventions follow judge/metrics.py: a probability ``p`` is the judge's
probability that the human-*chosen* response is better, so ``p > 0.5`` agrees with the label. A pair
is *decided* under a constitution when ``p`` is scored and not a tie; the paired statistics use the
pairs decided under BOTH (the others are counted, never read as right or wrong).

With ``a_i, b_i`` in {0, 1} = "the verdict agrees with the human label" under A and under B:

* paired difference: ``mean(b) - mean(a)`` over the paired pairs, with a seeded 95 % percentile
  bootstrap of ``mean(b_i - a_i)`` that resamples pairs (the two verdicts on one pair are one unit);
* McNemar's exact test (McNemar 1947) of the discordant pairs: ``n_a`` = right under A only,
  ``n_b`` = right under B only; under H0 (the edit does not change agreement) ``n_b ~ Bin(n_a + n_b, 1/2)``,
  two-sided p = ``min(1, 2 * P(X <= min(n_a, n_b)))`` (statsmodels' ``mcnemar(exact=True)``);
* Cohen's kappa (Cohen 1960) between A's and B's picks, ``(p_o - p_e) / (1 - p_e)`` on the 2 x 2 table
  of picks, with statsmodels' asymptotic 95 % interval. Since the human pick is always the pair's first
  response, "A picks first" is "A agrees with the label", so the kappa table is McNemar's table;
* flips: the pairs whose decided pick differs between A and B, ``to_label`` (wrong under A, right
  under B) or ``from_label`` (right under A, wrong under B).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from judge import metrics


def outcome(p: float | None) -> int | None:
    """1 when ``p`` agrees with the human label, 0 when it disagrees, None when unscored or a tie."""
    if p is None or metrics.is_tie(p):
        return None
    return int(p > 0.5)


@dataclass(frozen=True)
class Paired:
    """The pairs decided under both constitutions (``index`` into the inputs, outcomes under A and B)
    and how many were left out: unscored (None) or tied under at least one side."""

    index: list[int]
    a: list[int]
    b: list[int]
    left_out: int


def paired_outcomes(probs_a: Sequence[float | None], probs_b: Sequence[float | None]) -> Paired:
    if len(probs_a) != len(probs_b):
        raise ValueError("probs_a and probs_b must hold one probability per pair each")
    index, a, b = [], [], []
    for i, (pa, pb) in enumerate(zip(probs_a, probs_b, strict=True)):
        oa, ob = outcome(pa), outcome(pb)
        if oa is not None and ob is not None:
            index.append(i)
            a.append(oa)
            b.append(ob)
    return Paired(index, a, b, len(probs_a) - len(index))


def paired_difference(a: Sequence[int], b: Sequence[int], *, resamples: int = 1000, seed: int = 0) -> dict:
    """``mean(b) - mean(a)`` and its 95 % percentile bootstrap over pairs (``metrics.bootstrap_interval``;
    None with fewer than two pairs)."""
    out = {"value": None, "lo": None, "hi": None, "n": len(a), "method": "bootstrap over pairs",
           "resamples": resamples}
    if len(a):
        d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
        lo, hi = metrics.bootstrap_interval((d,), np.mean, resamples=resamples, seed=seed, vectorized=True)
        out.update(value=float(d.mean()), lo=lo, hi=hi)
    return out


def table(a: Sequence[int], b: Sequence[int]) -> list[list[int]]:
    """[[right under both, right under A only], [right under B only, wrong under both]]."""
    pairs = list(zip(a, b, strict=True))
    return [[pairs.count((1, 1)), pairs.count((1, 0))], [pairs.count((0, 1)), pairs.count((0, 0))]]


def mcnemar_exact(n_a: int, n_b: int) -> dict:
    """McNemar's exact two-sided test of ``n_a`` pairs right under A only vs ``n_b`` right under B only
    (statsmodels; no discordant pair: p = 1)."""
    from statsmodels.stats.contingency_tables import mcnemar

    p = 1.0 if n_a + n_b == 0 else float(mcnemar([[0, n_a], [n_b, 0]], exact=True).pvalue)
    return {"a_only": n_a, "b_only": n_b, "pvalue": p, "method": "McNemar exact (binomial)"}


def cohen_kappa(tab: Sequence[Sequence[int]]) -> dict:
    """Cohen's kappa of a square table of two raters' counts, with statsmodels' asymptotic 95 % interval
    (clipped to [-1, 1]).
    None when it is undefined: no pairs, or both raters put every pair in one and the same category
    (p_e = 1)."""
    from statsmodels.stats.inter_rater import cohens_kappa

    t = np.asarray(tab, dtype=float)
    n = t.sum()
    out = {"value": None, "lo": None, "hi": None, "table": [[int(x) for x in row] for row in tab]}
    if n == 0:
        return out
    p_e = float((t.sum(axis=1) * t.sum(axis=0)).sum() / n**2)
    if p_e >= 1.0 - 1e-12:
        return out
    with np.errstate(divide="ignore", invalid="ignore"):  # its z statistic (unused) divides by 0 at kappa = 1
        res = cohens_kappa(t, return_results=True)  # the normal-approximation interval may pass 1: clipped
    out.update(value=float(res.kappa), lo=max(-1.0, float(res.kappa_low)), hi=min(1.0, float(res.kappa_upp)))
    return out


@dataclass(frozen=True)
class Flip:
    """A pair whose decided pick differs between A and B."""

    index: int
    direction: str  # "to_label": wrong under A, right under B; "from_label": the reverse

    def to_dict(self) -> dict:
        return asdict(self)


def flips(probs_a: Sequence[float | None], probs_b: Sequence[float | None]) -> list[Flip]:
    paired = paired_outcomes(probs_a, probs_b)
    return [Flip(i, "to_label" if ob else "from_label")
            for i, oa, ob in zip(paired.index, paired.a, paired.b, strict=True) if oa != ob]


def compare(probs_a: Sequence[float | None], probs_b: Sequence[float | None], *, resamples: int = 1000,
            seed: int = 0) -> dict:
    """Every paired statistic of two lists of probabilities over the same pairs (module docstring)."""
    paired = paired_outcomes(probs_a, probs_b)
    tab = table(paired.a, paired.b)
    n = len(paired.a)
    return {
        "n_paired": n, "left_out": paired.left_out,
        "agreement_a": sum(paired.a) / n if n else None, "agreement_b": sum(paired.b) / n if n else None,
        "difference": paired_difference(paired.a, paired.b, resamples=resamples, seed=seed),
        "mcnemar": mcnemar_exact(tab[0][1], tab[1][0]) if n else {**mcnemar_exact(0, 0), "pvalue": None},
        "kappa": cohen_kappa(tab),
        "flips": {"to_label": tab[1][0], "from_label": tab[0][1]},
    }


def longer_wins(first: Sequence[str], second: Sequence[str]) -> list[float]:
    """The "longer response wins" baseline as probabilities of the first response (characters): 1 when
    it is longer, 0 when shorter, 0.5 (a tie, left out of agreement) when equal."""
    return [1.0 if len(f) > len(s) else 0.0 if len(f) < len(s) else 0.5
            for f, s in zip(first, second, strict=True)]


# --- the report's numbers from two sides' verdicts --------------------------------------------------


def principle_p(verdict, pid: str) -> float | None:
    """A principle's own probability on one pair (mean over its orders), None when it was not drawn."""
    from judge.scoring import principle_probability

    if pid not in verdict.principle_ids:
        return None
    return principle_probability([v for v in verdict.votes if v.principle_id == pid])


def by_order(verdict) -> dict:
    """The pair's ensembled probability as a whole and in each order alone (order "ab": chosen shown as (A))."""
    from judge.scoring import ensemble

    return {"pair": verdict.p_first, **{o: ensemble([v for v in verdict.votes if v.order == o],
                                                    verdict.principle_ids) for o in ("ab", "ba")}}


def pair_rows(pairs: Sequence, verdicts_a: Sequence, verdicts_b: Sequence) -> list[dict]:
    """One record per pair (pairs.jsonl): its draws and probabilities under A and under B, whole and per order."""
    return [{"id": p.id, "principles_a": list(va.principle_ids), "principles_b": list(vb.principle_ids),
             "under_a": by_order(va), "under_b": by_order(vb), "reason_a": va.reason, "reason_b": vb.reason}
            for p, va, vb in zip(pairs, verdicts_a, verdicts_b, strict=True)]


def ab_metrics(pairs: Sequence, verdicts_a: Sequence, verdicts_b: Sequence, status: dict[str, str], *,
               n_bins: int = 10, resamples: int = 1000, seed: int = 0) -> dict:
    """metrics.json (less cost and settings): each side's judge-eval metrics (judge/evaluate.py: agreement,
    position consistency, first-position win rate, top-label ECE, per principle), the paired comparison
    overall and per principle, the flipped pairs, and the longer-response baseline. ``status`` maps each
    principle id judged to unchanged / changed: ... / added / removed."""
    from judge.evaluate import compute_metrics

    opts = {"n_bins": n_bins, "resamples": resamples, "seed": seed}
    sides = {"a": compute_metrics(list(verdicts_a), **opts), "b": compute_metrics(list(verdicts_b), **opts)}
    pa, pb = [v.p_first for v in verdicts_a], [v.p_first for v in verdicts_b]
    per_principle = {}
    for pid in sorted(status):
        xa, xb = [principle_p(v, pid) for v in verdicts_a], [principle_p(v, pid) for v in verdicts_b]
        per_principle[pid] = {"status": status[pid], "pairs_a": sum(pid in v.principle_ids for v in verdicts_a),
                              "pairs_b": sum(pid in v.principle_ids for v in verdicts_b),
                              "a": sides["a"]["per_principle"].get(pid), "b": sides["b"]["per_principle"].get(pid),
                              **compare(xa, xb, resamples=resamples, seed=seed)}
    rows = pair_rows(pairs, verdicts_a, verdicts_b)
    flipped = [{"direction": f.direction, **{k: rows[f.index][k] for k in ("id", "principles_a", "principles_b",
                                                                           "under_a", "under_b")}}
               for f in flips(pa, pb)]
    return {"n_pairs": len(pairs), "a": sides["a"], "b": sides["b"],
            "paired": compare(pa, pb, resamples=resamples, seed=seed), "per_principle": per_principle,
            "flips": flipped,
            "baseline_longer_wins": metrics.agreement(longer_wins([p.first for p in pairs],
                                                                  [p.second for p in pairs])).to_dict()}
