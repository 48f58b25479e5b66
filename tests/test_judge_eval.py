"""Judge evaluation: the pure metric functions on hand-worked numbers, and ``rlaif judge-eval``
end to end (fake engines with a known behaviour, then the embedded model on real vLLM)."""

from __future__ import annotations

import gzip
import json
import math

import pytest

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


def test_paired_ece_equals_top_label_ece():
    """p = [0.9, 0.3] -> points (0.9, 1), (0.1, 0), (0.3, 1), (0.7, 0); gaps 0.1, 0.1, 0.7, 0.7, each
    weight 1/4 -> ECE 0.4. Top-label view: conf 0.9 right (gap 0.1), conf 0.7 wrong (gap 0.7) -> 0.4."""
    assert metrics.paired_ece([0.9, 0.3]) == pytest.approx(0.4)
    predicted, outcomes = metrics.paired_points([0.9, 0.3])
    assert predicted == pytest.approx([0.9, 0.1, 0.3, 0.7]) and outcomes == [1, 0, 1, 0]


def test_reliability_bins_counts_and_the_closed_last_bin():
    bins = metrics.reliability_bins([0.0, 0.05, 0.55, 1.0, 0.95], [0, 1, 1, 1, 0], n_bins=10)
    assert [b.n for b in bins] == [2, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    assert bins[0].observed == 0.5 and bins[0].mean_predicted == pytest.approx(0.025)
    assert bins[1].observed is None and bins[9].mean_predicted == pytest.approx(0.975)


def test_bootstrap_interval_is_seeded_and_brackets_the_estimate():
    values = [0.1, 0.9, 0.4, 0.8, 0.6, 0.3, 0.7, 0.2]

    def mean(xs):
        return sum(xs) / len(xs)

    a = metrics.bootstrap_interval(values, mean, resamples=1000, seed=3)
    assert a == metrics.bootstrap_interval(values, mean, resamples=1000, seed=3)
    assert a != metrics.bootstrap_interval(values, mean, resamples=1000, seed=4)
    assert a[0] < mean(values) < a[1]
    assert metrics.bootstrap_interval([0.7] * 5, mean, resamples=200) == pytest.approx((0.7, 0.7))


def test_first_position_win_rate():
    """Votes' p_a [0.8, 0.8, 0.3, None, 0.5]: A won twice, lost once; None and the tie left out -> 2/3."""
    p = metrics.first_position_wins([0.8, 0.8, 0.3, None, 0.5])
    assert (p.k, p.n) == (2, 3)


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
    # calibration over the two scored pairs: (0.8,1),(0.2,0),(0.5,1),(0.5,0) -> gaps .2,.2,.0 -> 0.1
    assert m["calibration"]["value"] == pytest.approx(0.1)
    assert m["calibration"]["n_pairs"] == 2


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
    """The (A) and (B) texts of the last comparison in a judge prompt (after any few-shot block)."""
    tail = prompt.rsplit("\nOptions:\n(A) ", 1)[1]
    a, rest = tail.split("\n(B) ", 1)
    return a.strip(), rest.rsplit("\nThe answer is:", 1)[0].strip()


class OracleEngine:
    """Prefers the human-chosen reply with probability 0.85 in whichever position it is shown."""

    chosen: set[str] = set()

    def __new__(cls, model="fake", **kw):
        from generator.engines.fake import FakeEngine

        def scorer(prompt, options):
            a, _ = _final_options(prompt)
            p_a = 0.85 if a in cls.chosen else 0.15
            return {"A": math.log(p_a), "B": math.log(1 - p_a)}

        return FakeEngine(model, scorer=scorer, **kw)


class AlwaysAEngine:
    """Pure position bias: option (A) wins with probability 0.8 whatever it says."""

    def __new__(cls, model="fake", **kw):
        from generator.engines.fake import FakeEngine

        return FakeEngine(model, scorer=lambda p, o: {"A": math.log(0.8), "B": math.log(0.2)}, **kw)


def _hh_rows(path, n):
    with gzip.open(path, "rt") as f:
        return [json.loads(next(f)) for _ in range(n)]


def _invoke(*args):
    from typer.testing import CliRunner

    from rlaif.cli import app

    return CliRunner().invoke(app, ["judge-eval", *map(str, args)])


def test_judge_eval_oracle_agrees_fully_without_position_bias(shared_data, tmp_path):
    from generator.inputs import hh_split

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
    fp = m["first_position_win_rate"]
    assert (fp["k"], fp["n"]) == (2 * n, 4 * n)  # 2 principles x 2 orders; (A) wins exactly half
    # every pair p = 0.85 -> points (0.85, 1) and (0.15, 0): gap 0.15 in both bins -> ECE 0.15, and
    # every bootstrap resample gives the same value, so the interval is degenerate
    cal = m["calibration"]
    assert cal["value"] == pytest.approx(0.15) and (cal["lo"], cal["hi"]) == pytest.approx((0.15, 0.15))
    assert [b["n"] for b in cal["bins"]] == [0, n, 0, 0, 0, 0, 0, 0, n, 0]
    assert all(p["value"] == 1.0 for p in m["per_principle"].values())
    assert sum(p["n"] for p in m["per_principle"].values()) == 2 * n
    assert m["settings"]["constitution_sha256"] and m["settings"]["model"] == "fake-judge"
    report = (out / "report.md").read_text()
    assert "| agreement with human label | 1.000 |" in report and "![reliability.png](reliability.png)" in report
    assert (out / "reliability.png").read_bytes()[:8] == PNG_MAGIC
    assert len((out / "pairs.jsonl").read_text().splitlines()) == n
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind


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
        assert v["value"] is None or v["lo"] <= v["value"] <= v["hi"], key
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
