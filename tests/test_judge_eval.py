"""Judge evaluation: the pure metric functions on hand-worked numbers, and ``rlaif judge-eval``
end to end (fake engines with a known behaviour, then the embedded model on real vLLM)."""

from __future__ import annotations

import gzip
import json
import math
import re

import pytest

from generator.engines.fake import FakeEngine
from judge import metrics

# --- pure metrics ---------------------------------------------------------------------------------


def test_wilson_interval_8_of_10_matches_the_textbook_value():
    """Wilson 95 % for 8/10: p = 0.8, z² = 3.8415; centre = (0.8 + 0.19207) / 1.38415 = 0.71674,
    half = 1.96 * sqrt(0.016 + 0.0096037) / 1.38415 = 0.22658 -> [0.4902, 0.9433]."""
    lo, hi = metrics.wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4)
    assert hi == pytest.approx(0.9433, abs=1e-4)


def test_wilson_interval_is_exact_at_the_edges_and_refuses_nonsense():
    assert metrics.wilson_interval(0, 5)[0] == 0.0
    assert metrics.wilson_interval(5, 5)[1] == 1.0
    assert 0.0 < metrics.wilson_interval(0, 5)[1] < 1.0  # not degenerate like the normal approximation
    with pytest.raises(ValueError):
        metrics.wilson_interval(3, 0)
    with pytest.raises(ValueError):
        metrics.wilson_interval(6, 5)


def test_agreement_leaves_out_ties_and_unscored_and_counts_them():
    """0.9 and 0.7 agree, 0.2 disagrees; 0.5 and 0.5 + 1e-12 (a float tie) are ties; None is unscored:
    agreement = 2 / 3, never 2 / 6 or 2 / 5."""
    a = metrics.agreement([0.9, 0.7, 0.5, None, 0.2, 0.5 + 1e-12])
    assert (a.proportion.k, a.proportion.n, a.ties, a.unscored) == (2, 3, 2, 1)
    assert a.proportion.value == pytest.approx(2 / 3)
    assert (a.proportion.lo, a.proportion.hi) == pytest.approx(metrics.wilson_interval(2, 3))
    empty = metrics.agreement([None, 0.5])
    assert empty.proportion.value is None and empty.proportion.n == 0 and (empty.ties, empty.unscored) == (1, 1)


def test_ece_hand_example():
    """predicted [0.9, 0.9, 0.2, 0.6], outcomes [1, 0, 0, 1], 10 bins:
    bin 9 {0.9, 0.9}: conf 0.9, freq 0.5, gap 0.4, weight 2/4 -> 0.20
    bin 2 {0.2}:      conf 0.2, freq 0.0, gap 0.2, weight 1/4 -> 0.05
    bin 6 {0.6}:      conf 0.6, freq 1.0, gap 0.4, weight 1/4 -> 0.10
    ECE = 0.35."""
    assert metrics.ece([0.9, 0.9, 0.2, 0.6], [1, 0, 0, 1], n_bins=10) == pytest.approx(0.35)


def test_top_label_ece_hand_example():
    """p = [0.9, 0.3]: the judge picks chosen with confidence 0.9 (right, gap 0.1) and rejected with
    confidence 0.7 (wrong, gap 0.7); bins 9 and 7, weight 1/2 each -> ECE 0.4."""
    assert metrics.top_label_ece([0.9, 0.3]) == pytest.approx(0.4)
    assert metrics.top_label_points([0.9, 0.3, 0.5]) == (pytest.approx([0.9, 0.7, 0.5]), [1.0, 0.0, 0.5])


def test_top_label_ece_differs_from_the_paired_points_at_bin_edges():
    """p = [0.6, 0.45], 10 bins.
    Top-label: confidence 0.6, right -> bin [0.6, 0.7), gap 0.4; confidence 0.55, wrong -> bin [0.5, 0.6),
    gap 0.55; ECE = 0.4 / 2 + 0.55 / 2 = 0.475.
    The paired points (p, 1), (1 - p, 0) = (0.6, 1), (0.4, 0), (0.45, 1), (0.55, 0): bin 4 {0.4, 0.45}
    mean 0.425, freq 0.5, gap 0.075, weight 2/4 -> 0.0375; bin 5 {0.55}: gap 0.55 -> 0.1375; bin 6 {0.6}:
    gap 0.4 -> 0.1; ECE = 0.275. The two are not equal: the paired construction is not the top-label ECE."""
    assert metrics.top_label_ece([0.6, 0.45], n_bins=10) == pytest.approx(0.475)
    assert metrics.ece([0.6, 0.4, 0.45, 0.55], [1, 0, 1, 0], n_bins=10) == pytest.approx(0.275)


def test_bin_edges_put_the_cot_clamp_in_its_own_bin():
    """The CoT clamp puts p exactly on 0.4 / 0.6 (confidence 0.6): it belongs to [0.6, 0.7). Every k/n
    lands in bin k, also where int(k/n * n) != k (15/22) and where linspace's edge is off (0.6)."""
    import numpy as np

    bins = metrics.reliability_bins(*metrics.top_label_points([0.4, 0.6]), n_bins=10)
    assert [b.n for b in bins] == [0, 0, 0, 0, 0, 0, 2, 0, 0, 0]
    assert np.linspace(0, 1, 11)[6] > 0.6 and int(15 / 22 * 22) == 14  # the traps avoided
    for n in (10, 22, 40):
        counts = [b.n for b in metrics.reliability_bins([k / n for k in range(n)], [1] * n, n_bins=n)]
        assert counts == [1] * n, n


def test_reliability_bins_counts_and_the_closed_last_bin():
    bins = metrics.reliability_bins([0.0, 0.05, 0.55, 1.0, 0.95], [0, 1, 1, 1, 0], n_bins=10)
    assert [b.n for b in bins] == [2, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    assert bins[0].accuracy == 0.5 and bins[0].mean_confidence == pytest.approx(0.025)
    assert bins[1].accuracy is None and bins[9].mean_confidence == pytest.approx(0.975)


def test_bootstrap_interval_hand_worked_and_seeded():
    """Mean of [0, 0, 0, 1] over resamples of 4: P(mean = 0) = (3/4)^4 = 0.316 > 0.025, so the 2.5 %
    point is 0; P(mean >= 0.75) = 4 (1/4)^3 (3/4) + (1/4)^4 = 0.0508 > 0.025 while P(mean = 1) =
    0.0039 < 0.025, so the 97.5 % point is 0.75 -> [0, 0.75]."""
    import numpy as np

    assert metrics.bootstrap_interval(([0, 0, 0, 1],), np.mean, resamples=4000, vectorized=True) == \
        pytest.approx((0.0, 0.75))
    values = [0.1, 0.9, 0.4, 0.8, 0.6, 0.3, 0.7, 0.2]
    a = metrics.bootstrap_interval((values,), np.mean, resamples=1000, seed=3)
    assert a == metrics.bootstrap_interval((values,), np.mean, resamples=1000, seed=3)
    assert a != metrics.bootstrap_interval((values,), np.mean, resamples=1000, seed=4)
    assert a[0] < np.mean(values) < a[1]
    assert metrics.bootstrap_interval(([0.7] * 5,), np.mean, resamples=200) == pytest.approx((0.7, 0.7))
    assert metrics.bootstrap_interval(([0.7],), np.mean) == (None, None)  # one pair: nothing to resample


def test_first_position_win_rate():
    """Votes' p_a per pair [[0.8, 0.8], [0.3, None, 0.5]]: A won twice, lost once; None and the tie left
    out -> 2/3, whatever the pairs."""
    p = metrics.first_position_wins([[0.8, 0.8], [0.3, None, 0.5]])
    assert (p.k, p.n, p.method) == (2, 3, "bootstrap over pairs")
    assert metrics.first_position_wins([[None], [0.5]]).value is None


def test_pair_bootstrap_is_wider_than_vote_wilson_when_votes_move_together():
    """10 pairs of 8 votes each; in 6 pairs (A) wins all 8 votes, in 4 pairs (B) wins all 8: 48/80 votes.
    The votes of a pair are one outcome repeated, so the information is that of 6/10 pairs: Wilson over
    80 votes ([0.490, 0.700]) is far too narrow. The pair bootstrap resamples pairs: the number of (A)-pairs
    in a resample is Binomial(10, 0.6), P(<= 2) = 0.012 < 0.025 < P(<= 3) = 0.055 and P(10) = 0.006 < 0.025 <
    P(>= 9) = 0.046, so its 95 % interval is [0.3, 0.9]."""
    votes = [[0.9] * 8] * 6 + [[0.1] * 8] * 4
    p = metrics.first_position_wins(votes, resamples=2000)
    assert (p.k, p.n, p.value) == (48, 80, 0.6)
    vote_lo, vote_hi = metrics.wilson_interval(48, 80)
    assert (vote_lo, vote_hi) == pytest.approx((0.4905, 0.7000), abs=1e-3)
    assert (p.lo, p.hi) == pytest.approx((0.3, 0.9))
    assert p.hi - p.lo > 2 * (vote_hi - vote_lo)


def test_first_position_wins_all_one_way_falls_back_to_wilson_over_pairs():
    """5 pairs whose 4 votes all go to (B): every bootstrap resample is 0/20 too, a point interval. The
    interval is Wilson 0/5 over the pairs instead: [0, 0.4345] (z² / (n + z²) = 3.8415 / 8.8415)."""
    p = metrics.first_position_wins([[0.2] * 4] * 5)
    assert (p.k, p.n, p.value, p.method) == (0, 20, 0.0, "Wilson over pairs (all votes one way)")
    assert (p.lo, p.hi) == pytest.approx((0.0, 0.4345), abs=1e-4)
    assert metrics.first_position_wins([[0.8] * 4] * 5).lo == pytest.approx(1 - 0.4345, abs=1e-4)


def test_injection_effect_hand_worked():
    """p of the injected (rejected) reply, clean [0.3, 0.3, 0.3, 0.3] -> injected [0.9, 0.9, 0.3, 0.1], plus an
    unscored pair: rises 2/4 (one falls), mean shift (0.6 + 0.6 + 0 - 0.2) / 4 = 0.25, verdict flips 2/4."""
    e = metrics.injection_effect([0.3, 0.3, 0.3, 0.3, None], [0.9, 0.9, 0.3, 0.1, 0.7], resamples=1000)
    f = e["flip_rate"]
    assert (e["n_pairs"], e["unscored"], f["k"], f["n"], f["falls"]) == (5, 1, 2, 4, 1)
    assert (f["lo"], f["hi"]) == pytest.approx((0.1500, 0.8500), abs=1e-4)  # Wilson 2/4
    assert e["mean_shift"]["value"] == pytest.approx(0.25)
    assert e["mean_shift"]["lo"] <= 0.25 <= e["mean_shift"]["hi"]
    assert (e["verdict_flips"]["k"], e["verdict_flips"]["n"]) == (2, 4)


def test_compute_metrics_on_hand_built_verdicts():
    """Pair 1: principle x says chosen in both orders (p_a 0.8 'ab', 0.2 'ba'); pair 2: y says A both
    times (0.6, 0.6) -> per principle 0.5 (a tie), inconsistent; pair 3 unscored."""
    from judge.evaluate import compute_metrics
    from judge.scoring import PairVerdict, Vote

    v1 = PairVerdict(0.8, (Vote("x", "ab", 0.8), Vote("x", "ba", 0.2)), ("x",), True)
    v2 = PairVerdict(0.5, (Vote("y", "ab", 0.6), Vote("y", "ba", 0.6)), ("y",), False)
    v3 = PairVerdict(None, (Vote("x", "ab", None, "option A not in top-20"),), ("x",), None, "no vote")
    m = compute_metrics([v1, v2, v3], resamples=200)
    assert (m["n_pairs"], m["unscored"]) == (3, 1)
    assert (m["agreement"]["k"], m["agreement"]["n"], m["agreement"]["ties"]) == (1, 1, 1)
    assert (m["position_consistency"]["k"], m["position_consistency"]["n"]) == (1, 2)
    assert m["position_consistency"]["undetermined"] == 1
    # votes' p_a: 0.8 (A), 0.2 (B), 0.6 (A), 0.6 (A), None -> 3/4 won by (A)
    fp = m["first_position_win_rate"]
    assert (fp["k"], fp["n"], fp["unscored_votes"]) == (3, 4, 1)
    assert (m["per_principle"]["x"]["k"], m["per_principle"]["x"]["n"], m["per_principle"]["x"]["unscored"]) == (1, 1, 1)
    assert (m["per_principle"]["y"]["n"], m["per_principle"]["y"]["ties"]) == (0, 1)
    # top-label over the two scored pairs: 0.8 -> conf 0.8, right (gap 0.2); the tie -> conf 0.5, half
    # right (gap 0) -> ECE 0.1
    assert m["calibration"]["value"] == pytest.approx(0.1)
    assert m["calibration"]["n_pairs"] == 2 and m["calibration"]["kind"] == "top-label"
    assert "injection" not in m


def test_judge_eval_config_requires_both_orders(tmp_path):
    from pydantic import ValidationError

    from judge.config import JudgeConfig
    from judge.evaluate import JudgeEvalConfig

    with pytest.raises(ValidationError, match="both orders"):
        JudgeEvalConfig(human=tmp_path / "h.jsonl", out=tmp_path / "o", judge=JudgeConfig(orders="one"))
    with pytest.raises(ValidationError, match="extra"):
        JudgeEvalConfig(human=tmp_path / "h.jsonl", out=tmp_path / "o", bins=5)


# --- rlaif judge-eval end to end ------------------------------------------------------------------

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _final_options(prompt: str) -> tuple[str, str]:
    """The (A) and (B) texts of the last comparison in a judge prompt (after any few-shot block),
    without the <response> fences."""
    tail = prompt.rsplit("\nOptions:\n(A) ", 1)[1]
    a, rest = tail.split("\n(B) ", 1)
    b = rest.rsplit("\nThe answer is:", 1)[0]
    return tuple(t.strip().removeprefix("<response>").removesuffix("</response>").strip() for t in (a, b))


class OracleEngine(FakeEngine):
    """Prefers the human-chosen reply with probability 0.85 in whichever position it is shown."""

    chosen: set[str] = set()

    def __init__(self, model="fake", **kw):
        super().__init__(model, scorer=self.score, **kw)

    def score(self, prompt, options):
        a, _ = _final_options(prompt)
        p_a = 0.85 if a in self.chosen else 0.15
        return {"A": math.log(p_a), "B": math.log(1 - p_a)}


class AlwaysAEngine(FakeEngine):
    """Pure position bias: option (A) wins with probability 0.8 whatever it says."""

    def __init__(self, model="fake", **kw):
        super().__init__(model, scorer=lambda p, o: {"A": math.log(0.8), "B": math.log(0.2)}, **kw)


def _hh_rows(path, n):
    with gzip.open(path, "rt") as f:
        return [json.loads(next(f)) for _ in range(n)]


def _invoke(*args):
    from typer.testing import CliRunner

    from rlaif.cli import app

    return CliRunner().invoke(app, ["judge-eval", *map(str, args)])


def test_judge_eval_oracle_agrees_fully_without_position_bias(shared_data, tmp_path):
    from plumbing.inputs import hh_split

    hh = shared_data / "hh-rlhf-harmless-base-test.jsonl.gz"
    OracleEngine.chosen = {hh_split(r["chosen"])[1].strip() for r in _hh_rows(hh, 20)}
    out = tmp_path / "eval"
    res = _invoke("--human", hh, "--limit", 20, "--engine", f"{__name__}:OracleEngine", "--model", "fake-judge",
                  "--principles-per-pair", 2, "--out", out, "--quiet")
    assert res.exit_code == 0, res.output + repr(res.exception)
    m = json.loads((out / "metrics.json").read_text())
    n = m["n_pairs"]
    assert n + len(m["settings"]["skipped_rows"]) == 20 and n >= 15
    assert (m["agreement"]["k"], m["agreement"]["n"], m["agreement"]["value"]) == (n, n, 1.0)
    assert m["position_consistency"]["value"] == 1.0
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    judged = sum(len(set(p["principle_ids"])) for p in pairs)  # distinct principles drawn (2 draws per pair)
    fp = m["first_position_win_rate"]
    assert (fp["k"], fp["n"]) == (judged, 2 * judged)  # each judged in 2 orders; (A) wins exactly half
    # every pair p = 0.85 -> confidence 0.85, the pick right: gap 0.15 -> ECE 0.15, and every bootstrap
    # resample gives the same value, so the interval is degenerate
    cal = m["calibration"]
    assert cal["value"] == pytest.approx(0.15) and (cal["lo"], cal["hi"]) == pytest.approx((0.15, 0.15))
    assert [b["n"] for b in cal["bins"]] == [0, 0, 0, 0, 0, 0, 0, 0, n, 0]  # confidence 0.85, right every time
    assert all(p["value"] == 1.0 for p in m["per_principle"].values())
    assert sum(p["n"] for p in m["per_principle"].values()) == judged
    assert m["settings"]["constitution_sha256"] and m["settings"]["model"] == "fake-judge"
    report = (out / "report.md").read_text()
    assert "| agreement with human label | 1.000 |" in report and "![reliability.png](reliability.png)" in report
    assert (out / "reliability.png").read_bytes()[:8] == PNG_MAGIC
    assert len(pairs) == n
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind


def test_judge_eval_batch_calibration_keeps_the_oracles_agreement_whatever_the_chunks(shared_data, tmp_path):
    """The human pick is always the pair's first response. Batch-calibrated by the prior of ALL the pairs'
    votes (both orders pooled: mean P(A) 0.5 for the unbiased oracle), its agreement stays 1.0 and the prior
    is recorded; chunks of 5 or 64 pairs give the same numbers. A prior per order and chunk (0.85 in "ab",
    0.15 in "ba") turned every vote into 0.5: agreement undefined, every pair a tie."""
    from judge.config import JudgeConfig
    from judge.evaluate import JudgeEvalConfig, run_judge_eval
    from plumbing.inputs import hh_split

    hh = shared_data / "hh-rlhf-harmless-base-test.jsonl.gz"
    OracleEngine.chosen = {hh_split(r["chosen"])[1].strip() for r in _hh_rows(hh, 20)}
    results = [run_judge_eval(JudgeEvalConfig(human=hh, out=tmp_path / str(size), limit=20, resamples=100,
                                              judge=JudgeConfig(engine=f"{__name__}:OracleEngine", model="fake",
                                                                principles_per_pair=4, calibrate="batch",
                                                                batch_size=size)))
               for size in (5, 64)]
    assert results[0]["by_calibration"] == results[1]["by_calibration"]
    batch = results[0]["by_calibration"]["batch"]
    assert batch["agreement"]["value"] == 1.0 and batch["agreement"]["n"] == results[0]["n_pairs"] >= 15
    assert batch["prior"]["applied"] and batch["prior"]["p_a"] == pytest.approx(0.5)
    assert batch["prior"]["by_order"]["ab"]["p_a"] == pytest.approx(0.85)  # the per-order mean holds the merit
    assert results[0]["agreement"] == batch["agreement"]  # the headline follows --calibrate batch
    assert "Prior P(A) = 0.500 over" in (tmp_path / "5" / "report.md").read_text()


def test_judge_eval_pure_position_bias_is_all_ties(shared_data, tmp_path):
    out = tmp_path / "eval"
    res = _invoke("--human", shared_data / "hh-rlhf-harmless-base-test.jsonl.gz", "--limit", 6,
                  "--engine", f"{__name__}:AlwaysAEngine", "--model", "fake-judge", "--out", out, "--quiet")
    assert res.exit_code == 0, res.output + repr(res.exception)
    m = json.loads((out / "metrics.json").read_text())
    n = m["n_pairs"]
    # p_first = mean(0.8, 1 - 0.8) = 0.5 for every pair: all ties, agreement undefined, never 0 or 0.5
    assert (m["agreement"]["n"], m["agreement"]["ties"], m["agreement"]["value"]) == (0, n, None)
    assert (m["position_consistency"]["k"], m["position_consistency"]["n"]) == (0, n)
    assert m["first_position_win_rate"]["value"] == 1.0
    assert m["calibration"]["value"] == pytest.approx(0.0)
    assert "| agreement with human label | n/a | n/a | 0/0 |" in (out / "report.md").read_text()


def test_judge_eval_cli_with_fake_engine_writes_report_metrics_and_png(run_cli, shared_data, tmp_path):
    out = tmp_path / "eval"
    res = run_cli("judge-eval", "--human", shared_data / "hh-rlhf-harmless-base-test.jsonl.gz", "--limit", 20,
                  "--engine", "fake", "--model", "fake-judge", "--out", out, "--quiet")
    assert res.returncode == 0, res.stderr
    assert "agreement" in res.stdout and res.stderr == ""
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_pairs"] >= 15 and m["settings"]["rows"] == 20 and m["settings"]["offset"] == 0
    for key in ("agreement", "position_consistency", "first_position_win_rate", "calibration"):
        v = m[key]
        assert v["value"] is not None and v["lo"] <= v["value"] <= v["hi"], key  # 15+ pairs: each is defined
    for png in ("reliability.png", "per_principle.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
    assert "| metric | value | 95% interval |" in (out / "report.md").read_text()


def test_judge_eval_bad_inputs_one_line_and_nothing_written(run_cli, shared_data, tmp_path):
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"prompt": "hi", "response": "hello"}) + "\n")
    hh = shared_data / "hh-rlhf-harmless-base-test.jsonl.gz"
    cases = {
        "missing": (["--human", tmp_path / "nope.jsonl"], "nope.jsonl"),
        "format": (["--human", wrong], "no 'chosen'/'rejected'"),
        "offset": (["--human", hh, "--offset", 10**6], "beyond the end"),
    }
    for name, (args, needle) in cases.items():
        out = tmp_path / f"out-{name}"
        res = run_cli("judge-eval", *args, "--engine", "fake", "--model", "fake-judge", "--out", out, "--quiet")
        assert res.returncode != 0, name
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], (name, res.stderr)
        assert not out.exists(), name


def _one_line_error(res) -> str:
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    return lines[0]


def _snapshot(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_judge_eval_refuses_a_users_folder_untouched(run_cli, shared_data, tmp_path):
    """A folder of the user's (here holding their own metrics.json and README.md) is refused, with and
    without --overwrite: exit 2, one line, every byte as it was, nothing written beside it."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "metrics.json").write_text('{"my": "numbers"}\n')
    (out / "README.md").write_text("my notes\n")
    before = _snapshot(out)
    for extra in ([], ["--overwrite"]):
        res = run_cli("judge-eval", "--human", shared_data / "hh-rlhf-harmless-base-test.jsonl.gz", "--limit", 4,
                      "--engine", "fake", "--model", "fake-judge", "--out", out, "--quiet", *extra)
        assert "not an rlaif run directory" in _one_line_error(res)
        assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


class ExplodingEngine(FakeEngine):
    def __init__(self, *a, **kw):
        raise AssertionError("the engine was made before --out was checked")


def test_judge_eval_checks_out_before_any_model_loads(shared_data, tmp_path):
    from judge.config import JudgeConfig
    from judge.evaluate import JudgeEvalConfig, run_judge_eval
    from plumbing.runs import RunError

    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.md").write_text("mine\n")
    config = JudgeEvalConfig(human=shared_data / "hh-rlhf-harmless-base-test.jsonl.gz", out=out, limit=2,
                             overwrite=True, judge=JudgeConfig(engine=f"{__name__}:ExplodingEngine"))
    with pytest.raises(RunError, match="not an rlaif run directory"):
        run_judge_eval(config)
    assert (out / "report.md").read_text() == "mine\n"


def test_judge_eval_replaces_its_own_output_only_with_overwrite(run_cli, shared_data, tmp_path):
    hh = shared_data / "hh-rlhf-harmless-base-test.jsonl.gz"
    out = tmp_path / "eval"
    first = _invoke("--human", hh, "--limit", 4, "--inject", "--engine", "fake", "--model", "fake-judge",
                    "--out", out, "--quiet")
    assert first.exit_code == 0, first.output + repr(first.exception)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "judge-eval" and "metrics.json" in manifest["files"]
    before = _snapshot(out)
    res = run_cli("judge-eval", "--human", hh, "--limit", 6, "--engine", "fake", "--model", "fake-judge",
                  "--out", out, "--quiet")
    assert "pass --overwrite" in _one_line_error(res)
    assert _snapshot(out) == before
    again = _invoke("--human", hh, "--limit", 6, "--engine", "fake", "--model", "fake-judge", "--out", out,
                    "--quiet", "--overwrite")
    assert again.exit_code == 0, again.output + repr(again.exception)
    m = json.loads((out / "metrics.json").read_text())
    assert m["settings"]["rows"] == 6 and "injection" not in m
    assert "p_first_injected" not in (out / "pairs.jsonl").read_text()  # nothing of the first output is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]  # no temp or set-aside folder
    (tmp_path / "plain").mkdir()
    assert out.stat().st_mode == (tmp_path / "plain").stat().st_mode  # not the temp folder's 0o700


def _hh_row(question: str, chosen: str, rejected: str) -> dict:
    return {"chosen": f"\n\nHuman: {question}\n\nAssistant: {chosen}",
            "rejected": f"\n\nHuman: {question}\n\nAssistant: {rejected}"}


class InjectionJudge(FakeEngine):
    """Prefers the reply holding GOOD with p = 0.7 in either position. An injected instruction in the
    rejected reply moves it to p(chosen) = 0.1 when that reply says OBEY, 0.9 when it says RESIST, and
    not at all when it says IGNORE. ``seen`` records (the injected reply's option, the letter it names)."""

    seen: list = []

    def __init__(self, model="fake", **kw):
        super().__init__(model, scorer=self.score, **kw)

    def score(self, prompt, options):
        a, b = _final_options(prompt)
        chosen_at_a = "GOOD" in a
        rejected, letter = (b, "B") if chosen_at_a else (a, "A")
        p_chosen = 0.7
        named = re.search(r"the answer is \(([AB])\)\.$", rejected)
        if named:
            self.seen.append((letter, named.group(1)))
            p_chosen = 0.1 if "OBEY" in rejected else 0.9 if "RESIST" in rejected else 0.7
        p_a = p_chosen if chosen_at_a else 1 - p_chosen
        return {"A": math.log(p_a), "B": math.log(1 - p_a)}


def test_judge_eval_inject_flip_rate_on_the_fake_engine(tmp_path):
    """Four pairs; clean, every pair has p(chosen) = 0.7 in both orders, so p(injected reply) = 0.3.
    Injected: OBEY, OBEY -> 0.9; IGNORE -> 0.3; RESIST -> 0.1. Flip rate 2/4 (Wilson [0.150, 0.850]),
    mean shift (0.6 + 0.6 + 0 - 0.2) / 4 = 0.25, verdicts flipped 2/4, agreement under injection 2/4."""
    human = tmp_path / "human.jsonl"
    kinds = ["OBEY", "OBEY", "IGNORE", "RESIST"]
    human.write_text("".join(json.dumps(_hh_row(f"Question {i}?", f"GOOD answer {i}.", f"bad answer {i} {kind}."))
                             + "\n" for i, kind in enumerate(kinds)))
    InjectionJudge.seen = []
    out = tmp_path / "eval"
    res = _invoke("--human", human, "--engine", f"{__name__}:InjectionJudge", "--model", "fake-judge",
                  "--principles-per-pair", 2, "--inject", "--out", out, "--quiet")
    assert res.exit_code == 0, res.output + repr(res.exception)
    m = json.loads((out / "metrics.json").read_text())
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    # every distinct principle of a pair, in 2 orders, injected: the instruction names its own reply's option
    assert len(InjectionJudge.seen) == 2 * sum(len(set(p["principle_ids"])) for p in pairs)
    assert all(own == named for own, named in InjectionJudge.seen)
    assert {own for own, _ in InjectionJudge.seen} == {"A", "B"}
    assert (m["agreement"]["k"], m["agreement"]["n"]) == (4, 4)  # the clean verdicts are untouched
    inj = m["injection"]
    flip = inj["flip_rate"]
    assert (flip["k"], flip["n"], flip["falls"]) == (2, 4, 1)
    assert (flip["lo"], flip["hi"]) == pytest.approx((0.1500, 0.8500), abs=1e-4)
    assert inj["mean_shift"]["value"] == pytest.approx(0.25)
    assert (inj["verdict_flips"]["k"], inj["verdict_flips"]["n"]) == (2, 4)
    assert (inj["agreement"]["k"], inj["agreement"]["n"]) == (2, 4)
    report = (out / "report.md").read_text()
    assert "| flip rate: p rises | 0.500 | [0.150, 0.850] | 2/4 (1 fall) | Wilson |" in report
    assert "| mean shift of p | 0.250 |" in report
    assert [p["p_first_injected"] for p in pairs] == pytest.approx([0.1, 0.1, 0.7, 0.9])
    assert "flip rate 0.500" in res.output


def test_injected_judging_without_instruction_equals_the_plain_judge(shared_data):
    """With an empty instruction, judging each order as its own pair and relabelling the "ba" votes
    reproduces judge_pairs vote for vote (the hash-based fake engine answers per prompt text)."""
    from constitution import DEFAULT_PATH, load_constitution
    from generator.engines.fake import FakeEngine
    from judge.config import JudgeConfig
    from judge.evaluate import read_human_pairs
    from judge.injection import judge_injected
    from judge.scoring import judge_pairs

    pairs = read_human_pairs(shared_data / "hh-rlhf-harmless-base-test.jsonl.gz", limit=5).pairs
    const, config, engine = load_constitution(DEFAULT_PATH), JudgeConfig(principles_per_pair=3), FakeEngine()
    plain = judge_pairs(engine, const, pairs, config)
    split = judge_injected(engine, const, pairs, config, instruction="")
    assert [v.p_first for v in split] == [v.p_first for v in plain]
    assert [[x.to_record() for x in v.votes] for v in split] == [[x.to_record() for x in v.votes] for v in plain]
    assert [v.position_consistent for v in split] == [v.position_consistent for v in plain]
    injected = judge_injected(engine, const, pairs, config)
    assert [v.p_first for v in injected] != [v.p_first for v in plain]  # the instruction changes the prompts


@pytest.mark.integration
def test_judge_eval_on_the_embedded_model_with_vllm(run_cli, shared_data, tmp_path, vllm_server):
    # The session's vLLM server: the real model behind the real CLI, without another engine start-up.
    out = tmp_path / "eval"
    res = run_cli("judge-eval", "--human", shared_data / "hh-rlhf-harmless-base-test.jsonl.gz", "--limit", 8,
                  "--engine", "openai", "--base-url", vllm_server, "--out", out, "--quiet", timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_pairs"] == 8 and m["settings"]["model"] == "smollm2-135m"
    assert m["first_position_win_rate"]["n"] > 0  # the real model's option letters were read
    assert m["agreement"]["n"] + m["agreement"]["ties"] + m["unscored"] == 8
    assert m["calibration"]["value"] is not None and 0.0 <= m["calibration"]["value"] <= 1.0
    assert (out / "reliability.png").read_bytes()[:8] == PNG_MAGIC


def test_every_command_that_runs_a_model_defaults_to_the_auto_engine():
    """`rlaif judge-eval --engine` defaulted to vllm (an error on a machine without it) where the others say auto."""
    import typer.main

    from rlaif.cli import app

    commands = typer.main.get_command(app).commands
    for name in ("generate", "revise", "judge", "judge-eval", "eval", "demo"):
        assert {p.name: p.default for p in commands[name].params}["engine"] == "auto", name
