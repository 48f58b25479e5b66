"""The win-rate math of ``rlaif eval`` (evaluation/winrate.py), on hand-worked numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation import winrate


def test_win_rate_hand_worked():
    m = winrate.win_rate([0.9, 0.6, 0.3, 0.5, None], resamples=200, seed=0)
    assert m["value"] == pytest.approx(0.575)  # (0.9 + 0.6 + 0.3 + 0.5) / 4
    assert (m["n"], m["unscored"], m["wins"], m["losses"], m["ties"]) == (4, 1, 2, 1, 1)
    assert 0.3 <= m["lo"] <= 0.575 <= m["hi"] <= 0.9


def test_win_rate_interval_of_two_prompts_is_hand_worked():
    """Resampling two prompts [0, 1] gives means 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4, so the 2.5 %
    and 97.5 % percentiles of the bootstrap distribution are 0 and 1."""
    m = winrate.win_rate([0.0, 1.0], resamples=2000, seed=1)
    assert m["value"] == 0.5
    assert (m["lo"], m["hi"]) == (0.0, 1.0)


def test_win_rate_interval_is_seeded_and_narrows_with_more_prompts():
    rng = np.random.default_rng(0)
    few = list(rng.uniform(0.3, 0.9, 10))
    many = list(rng.uniform(0.3, 0.9, 400))
    a, b = winrate.win_rate(few, seed=3), winrate.win_rate(few, seed=3)
    assert (a["lo"], a["hi"]) == (b["lo"], b["hi"])
    wide = winrate.win_rate(few, seed=3)
    narrow = winrate.win_rate(many, seed=3)
    assert narrow["hi"] - narrow["lo"] < wide["hi"] - wide["lo"]


def test_win_rate_of_identical_verdicts_is_a_point_and_none_is_not_half():
    assert winrate.win_rate([0.5, 0.5, 0.5]) | {} == winrate.win_rate([0.5, 0.5, 0.5])
    m = winrate.win_rate([0.5, 0.5, 0.5])
    assert (m["value"], m["lo"], m["hi"], m["ties"]) == (0.5, 0.5, 0.5, 3)
    empty = winrate.win_rate([None, None])
    assert (empty["value"], empty["n"], empty["unscored"]) == (None, 0, 2)
    one = winrate.win_rate([0.8])
    assert (one["value"], one["lo"], one["hi"]) == (0.8, None, None)  # nothing to resample


def test_length_feature_is_tanh_of_standardised_difference():
    feature, sd = winrate.length_feature([0, 2])
    assert sd == pytest.approx(math.sqrt(2))  # sample sd of [0, 2]
    assert feature == pytest.approx([0.0, math.tanh(2 / math.sqrt(2))])
    assert winrate.length_feature([3, 3, 3]) == ([], 0.0)


def test_logistic_fit_recovers_a_known_curve():
    f = [-0.9, -0.4, 0.0, 0.3, 0.8]
    p = [winrate.sigmoid(0.4 + 1.5 * x) for x in f]
    fit = winrate.logistic_fit(p, f)
    assert fit["reason"] is None
    assert fit["intercept"] == pytest.approx(0.4, abs=1e-6)
    assert fit["slope"] == pytest.approx(1.5, abs=1e-6)


def test_length_controlled_on_a_known_curve_is_sigmoid_of_the_intercept():
    d = [-300, -120, 0, 80, 250, 400]
    feature, _ = winrate.length_feature(d)
    p = [winrate.sigmoid(0.4 + 1.5 * x) for x in feature]
    lc = winrate.length_controlled(p, d)
    assert lc["value"] == pytest.approx(winrate.sigmoid(0.4), abs=1e-6)  # 0.598688
    assert lc["value"] == pytest.approx(0.598688, abs=1e-6)
    assert lc["fit"]["slope"] == pytest.approx(1.5, abs=1e-6)
    assert lc["lo"] <= lc["value"] <= lc["hi"]


def test_length_controlled_hand_worked():
    """p = [0.5, 0.9], d = [0, 2]: the fit passes through both points, and at d = 0 the verdict is 0.5."""
    lc = winrate.length_controlled([0.5, 0.9], [0, 2])
    assert lc["value"] == pytest.approx(0.5, abs=1e-9)
    assert winrate.win_rate([0.5, 0.9])["value"] == pytest.approx(0.7)


def test_length_controlled_equals_raw_at_equal_lengths():
    p = [0.9, 0.6, 0.3, 0.55, 0.7]
    lc = winrate.length_controlled(p, [0, 0, 0, 0, 0])
    assert lc["fit"]["slope"] is None  # intercept only
    assert lc["value"] == pytest.approx(np.mean(p), abs=1e-9)
    assert lc["lo"] < lc["value"] < lc["hi"]


def test_length_controlled_equals_raw_when_length_does_not_matter():
    """Verdicts symmetric in the length difference: the slope is 0 and LC is the raw mean."""
    p = [0.6, 0.6, 0.6, 0.6]
    lc = winrate.length_controlled(p, [-50, -10, 10, 50])
    assert lc["fit"]["slope"] == pytest.approx(0.0, abs=1e-9)
    assert lc["value"] == pytest.approx(0.6, abs=1e-9)


def test_length_controlled_refuses_what_it_cannot_fit():
    constant = winrate.length_controlled([0.7, 0.8], [5, 5])
    assert constant["value"] is None and "cannot be separated" in constant["reason"]
    separated = winrate.length_controlled([0.0, 0.0, 1.0, 1.0], [-20, -10, 10, 20])
    assert separated["value"] is None and "separat" in separated["reason"]
    all_lost = winrate.length_controlled([0.0, 0.0], [0, 0])
    assert all_lost["value"] is None and "infinite" in all_lost["reason"]
    assert winrate.length_controlled([None], [3])["reason"] == "no scored prompt"


def test_length_correlation_hand_worked():
    c = winrate.length_correlation([0.2, 0.4, 0.6, None], [-10, 0, 10, 99])
    assert c["n"] == 3
    assert c["pearson"] == pytest.approx(1.0)
    assert c["spearman"] == pytest.approx(1.0)
    flat = winrate.length_correlation([0.5, 0.5, 0.5], [1, 2, 3])
    assert flat["pearson"] is None and flat["reason"] == "the verdict is constant"
    assert "at least 3" in winrate.length_correlation([0.5, 0.6], [1, 2])["reason"]


def test_accuracy_leaves_out_unscored():
    a = winrate.accuracy([1.0, 0.0, 1.0, None])
    assert (a["k"], a["n"], a["unscored"]) == (2, 3, 1)
    assert a["value"] == pytest.approx(2 / 3)
    assert a["lo"] < 2 / 3 < a["hi"]
