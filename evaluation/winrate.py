"""Pure math of ``rlaif eval``: win-rate against a reference, its interval, length control, accuracy.

No I/O and no engine: plain numbers in, plain dicts out, each function tested with hand-worked
values (tests/test_eval_math.py).

Conventions:

- ``p[i]`` is the judge's soft probability that the POLICY's response to prompt i beats the
  reference's (both option orders averaged, principles ensembled: judge/scoring.py); ``None`` means
  the pair could not be scored and is left out of every statistic (counted as ``unscored``), never
  read as 0.5.
- The win-rate is the mean of ``p`` over prompts (the soft win-rate of AlpacaEval, arXiv 2404.04475).
  Its 95 % interval is a seeded percentile bootstrap over prompts (``judge.metrics.bootstrap_interval``,
  ``scipy.stats.bootstrap``), the prompt being the unit of independence.
- The length difference is ``len(policy) - len(reference)`` in CHARACTERS (policy and reference may
  use different tokenizers; characters compare across them).
- Length control follows AlpacaEval-LC (Dubois et al., arXiv 2404.04475, sec. 3): a logistic GLM of the
  verdict on the length feature ``f = tanh(d / sd(d))`` (``sd`` the sample standard deviation,
  ``ddof=1``), ``logit p = a + b f``, fitted by quasi-maximum likelihood on the soft verdicts
  (``statsmodels`` GLM, Binomial family: the fractional logit of Papke & Wooldridge 1996). The
  length-controlled win-rate is the prediction at zero length difference, ``sigmoid(a)``; its interval
  is the Wald interval of ``a`` with the robust (HC0) standard error, mapped through the sigmoid. This
  reduced model has no per-instruction difficulty term (AlpacaEval's has one, fitted across many
  models); with one policy and one reference there is nothing to fit it on.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from judge.metrics import LEVEL, TIE_EPS, bootstrap_interval, proportion

Z = 1.959963984540054  # the 97.5 % normal quantile: a 95 % Wald interval


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def win_rate(p: Sequence[float | None], *, resamples: int = 1000, seed: int = 0) -> dict:
    """Mean soft win probability over scored prompts, with a bootstrap interval over prompts, and the
    hard counts (``wins``: p > 0.5, ``losses``: p < 0.5, ``ties``: within ``TIE_EPS`` of 0.5).

    Worked example (``test_win_rate_hand_worked``): p = [0.9, 0.6, 0.3, 0.5, None] -> value
    (0.9 + 0.6 + 0.3 + 0.5) / 4 = 0.575, 2 wins, 1 loss, 1 tie, 1 unscored."""
    scored = [float(x) for x in p if x is not None]
    out = {"value": None, "lo": None, "hi": None, "n": len(scored), "unscored": len(p) - len(scored),
           "wins": sum(x > 0.5 + TIE_EPS for x in scored), "losses": sum(x < 0.5 - TIE_EPS for x in scored),
           "method": "bootstrap over prompts", "resamples": resamples, "level": LEVEL}
    out["ties"] = len(scored) - out["wins"] - out["losses"]
    if scored:
        lo, hi = bootstrap_interval((scored,), np.mean, resamples=resamples, seed=seed, vectorized=True)
        out.update(value=float(np.mean(scored)), lo=lo, hi=hi)
    return out


def length_feature(delta: Sequence[float]) -> tuple[list[float], float | None]:
    """AlpacaEval-LC's length feature ``tanh(d / sd(d))`` and ``sd`` (``ddof=1``). When the differences
    do not vary (``sd`` 0 or fewer than two) the feature is undefined: ``([], sd)``."""
    d = np.asarray(delta, dtype=float)
    sd = float(np.std(d, ddof=1)) if len(d) > 1 else None
    if not sd:
        return [], sd
    return [float(x) for x in np.tanh(d / sd)], sd


def logistic_fit(p: Sequence[float], feature: Sequence[float] | None) -> dict:
    """Fractional-logit fit ``logit p = a + b f`` (``feature`` None: intercept only). Returns
    ``intercept``, ``slope``, their robust (HC0) standard errors, and ``reason`` (None when the fit is
    usable; a text when it is not: perfect separation, no convergence, a verdict of exactly 0 or 1 for
    every prompt).

    Identity (``test_logistic_fit_recovers_a_known_curve``): soft verdicts that lie exactly on a logistic
    curve are fitted exactly, since the quasi-likelihood score equations ``sum (p_i - sigmoid(a + b f_i))
    (1, f_i) = 0`` hold at the true (a, b)."""
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationWarning

    y = np.asarray(p, dtype=float)
    x = np.ones((len(y), 1)) if feature is None else sm.add_constant(np.asarray(feature, dtype=float),
                                                                      has_constant="add")
    out = {"intercept": None, "slope": None, "se_intercept": None, "se_slope": None, "reason": None}
    if np.all(y <= 0) or np.all(y >= 1):
        out["reason"] = "every verdict is exactly 0 or exactly 1 the same way: the logit is infinite"
        return out
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = sm.GLM(y, x, family=sm.families.Binomial()).fit(cov_type="HC0")
        except (np.linalg.LinAlgError, ValueError) as e:
            out["reason"] = f"the logistic fit failed ({e})"
            return out
    # statsmodels also warns of "perfect prediction" when soft verdicts lie exactly on a curve; only hard
    # verdicts (exactly 0 or 1) can be separated, since with every y inside (0, 1) the maximum is finite.
    hard = bool(np.any((y <= 0) | (y >= 1)))
    separated = any(issubclass(w.category, PerfectSeparationWarning) for w in caught) and hard
    unconverged = any(issubclass(w.category, ConvergenceWarning) for w in caught)
    params, se = np.asarray(res.params, dtype=float), np.asarray(res.bse, dtype=float)
    if separated or unconverged or not (np.all(np.isfinite(params)) and np.all(np.isfinite(se))):
        out["reason"] = ("the verdict is separated by length (perfect separation): no finite fit" if separated
                         else "the logistic fit did not converge" if unconverged
                         else "the logistic fit has no finite solution")
        return out
    out.update(intercept=float(params[0]), se_intercept=float(se[0]))
    if feature is not None:
        out.update(slope=float(params[1]), se_slope=float(se[1]))
    return out


def length_controlled(p: Sequence[float | None], delta: Sequence[float]) -> dict:
    """The length-controlled win-rate (module docstring): ``sigmoid(a)`` of the fit on the scored prompts.

    Worked example (``test_length_controlled_hand_worked``): p = [0.5, 0.9], d = [0, 2]: two points and
    two parameters fit exactly; the prompt with d = 0 has p = 0.5, so the LC win-rate is 0.5 while the raw
    win-rate is 0.7. When every length difference is 0 the model is intercept-only and ``sigmoid(a)`` is
    the mean verdict: the LC win-rate equals the raw one (``test_length_controlled_equals_raw_at_equal_lengths``).
    """
    if len(p) != len(delta):
        raise ValueError("p and delta must have one value per prompt each")
    pairs = [(float(x), float(d)) for x, d in zip(p, delta, strict=True) if x is not None]
    out = {"value": None, "lo": None, "hi": None, "n": len(pairs), "feature": "tanh(d / sd(d)), d in characters",
           "sd": None, "method": "Wald, robust (HC0) standard error", "level": LEVEL}
    if not pairs:
        return {**out, "fit": None, "reason": "no scored prompt"}
    y, d = [x for x, _ in pairs], [dd for _, dd in pairs]
    feature, sd = length_feature(d)
    out["sd"] = sd
    if not feature and any(dd != 0 for dd in d):
        return {**out, "fit": None, "reason": f"every length difference is {d[0]:g}: the length effect cannot be "
                                              f"separated from the policy's"}
    fit = logistic_fit(y, feature or None)
    out.update(fit=fit, reason=fit["reason"])
    if fit["reason"] is None:
        a, se = fit["intercept"], fit["se_intercept"]
        out.update(value=sigmoid(a), lo=sigmoid(a - Z * se), hi=sigmoid(a + Z * se))
    return out


def length_correlation(p: Sequence[float | None], delta: Sequence[float]) -> dict:
    """Pearson and Spearman correlation of the verdict with the length difference (characters) over the
    scored prompts (``scipy.stats``); ``None`` with a reason where undefined (fewer than 3 prompts, or a
    constant verdict or length difference)."""
    from scipy.stats import pearsonr, spearmanr

    pairs = [(float(x), float(d)) for x, d in zip(p, delta, strict=True) if x is not None]
    out: dict = {"n": len(pairs), "unit": "characters", "pearson": None, "pearson_p": None, "spearman": None,
                 "spearman_p": None, "reason": None}
    y, d = np.array([x for x, _ in pairs]), np.array([dd for _, dd in pairs])
    if len(pairs) < 3:
        out["reason"] = f"{len(pairs)} scored prompts; a correlation needs at least 3"
    elif np.ptp(y) == 0 or np.ptp(d) == 0:
        out["reason"] = "the verdict is constant" if np.ptp(y) == 0 else "the length difference is constant"
    else:
        r, rp = pearsonr(d, y)
        s, sp = spearmanr(d, y)
        out.update(pearson=float(r), pearson_p=float(rp), spearman=float(s), spearman_p=float(sp))
    return out


def accuracy(scores: Sequence[float | None]) -> dict:
    """Share of answer-checked responses scored correct (score 1.0), Wilson interval; ``None`` scores (no
    verdict: a gold answer the checker cannot read) are left out and counted."""
    scored = [s for s in scores if s is not None]
    return {**proportion(sum(s >= 1.0 for s in scored), len(scored)).to_dict(),
            "unscored": len(scores) - len(scored)}
