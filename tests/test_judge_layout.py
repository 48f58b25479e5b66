"""The shared-prefix layout, cache-wave scheduling, the ideal-cache count and batch calibration.

Hand-worked numbers throughout; the one test that needs the real tokenizer loads only the embedded
model's tokenizer (no model, no engine).
"""

from __future__ import annotations

import math
import os

import pytest

from constitution import DEFAULT_PATH, load_constitution
from judge.calibration import MIN_VOTES, apply_prior, batch_calibrate, uncalibrated
from judge.config import JudgeConfig
from judge.prefix import ideal_uncached_tokens
from judge.scoring import (
    PAIRWISE_SHARED,
    Pair,
    PairVerdict,
    Vote,
    build_tasks,
    cache_waves,
    calibrate_verdicts,
    judge_pairs,
    make_verdict,
    raw_verdicts,
    render_direct,
    templates_used,
)

CONVERSATION = [{"role": "user", "content": "How do I get rid of the wasps' nest under my roof?"}]
PAIR = Pair("w1", CONVERSATION, "Pour petrol on it at noon and set it alight.",
            "A nest that size is best left to a pest-control service; keep people and pets away from it.")


# --- batch calibration ----------------------------------------------------------------------------


def test_batch_calibration_hand_worked():
    """judge/calibration.py's example: nine undecided votes (0.5) and one saturated (1 - 1e-16). The prior
    is the mean probability 0.55 (log-odds 0.2007), so 0.5 calibrates to 0.45 and the saturated vote stays
    at 1; a mean of log-odds (3.67) would have turned each 0.5 into 0.025. The unscored vote stays
    unscored and out of the mean; the orders are pooled (4 "ab" votes, 6 "ba")."""
    from judge.calibration import calibrated, log_odds

    votes = [Vote(f"p{i}", "ab" if i < 4 else "ba", 0.5) for i in range(9)]
    votes += [Vote("s", "ba", 1 - 1e-16), Vote("u", "ab", None, "missing")]
    cal, prior = batch_calibrate(votes, min_votes=10)
    assert (prior.p_a, prior.votes, prior.applied) == (pytest.approx(0.55), 10, True)
    assert prior.by_order == {"ab": {"p_a": 0.5, "votes": 4}, "ba": {"p_a": pytest.approx(3.5 / 6), "votes": 6}}
    assert prior.to_dict()["log_odds"] == pytest.approx(math.log(0.55 / 0.45)) == pytest.approx(0.2007, abs=1e-4)
    assert [v.p_a for v in cal[:9]] == pytest.approx([0.45] * 9, abs=1e-12)
    assert cal[9].p_a == pytest.approx(1.0) and cal[10].p_a is None and cal[10].reason == "missing"
    assert [v.p_a_raw for v in cal] == [0.5] * 9 + [1 - 1e-16, None]
    # the paper's ratio form, renormalised, is the same number as the shift of log-odds
    assert calibrated(0.5, 0.55) == pytest.approx((0.5 / 0.55) / (0.5 / 0.55 + 0.5 / 0.45))
    old_prior = sum(log_odds(v.p_a) for v in votes[:10]) / 10
    assert old_prior == pytest.approx(3.67, abs=0.01) and 1 / (1 + math.exp(old_prior)) == pytest.approx(0.025, abs=1e-3)
    assert [(v.p_a, v.p_a_raw) for v in uncalibrated(cal)] == [(v.p_a, None) for v in votes]
    with pytest.raises(ValueError, match="raw votes"):
        apply_prior(cal, prior)


def test_a_lone_vote_is_left_as_read_and_the_run_says_why():
    """Fewer than MIN_VOTES scored votes give no prior: a lone vote keeps its 0.3 (the per-batch mean of
    log-odds made every lone vote 0.5), and the record says it was not applied and why. The bound is
    inclusive: 31 votes are left as read, 32 are calibrated."""
    cal, prior = batch_calibrate([Vote("x", "ba", 0.3)])
    assert cal[0].p_a == 0.3 and cal[0].p_a_raw is None
    assert not prior.applied and prior.to_dict()["applied"] is False
    assert prior.reason == f"not calibrated: 1 scored vote, batch calibration needs at least {MIN_VOTES}; " \
                           "the labels are the probabilities as read"
    few = [Vote("x", "ab", 0.8)] * (MIN_VOTES - 2) + [Vote("x", "ba", 0.6), Vote("x", "ab", None, "missing")]
    assert [v.p_a for v in batch_calibrate(few)[0]] == [v.p_a for v in few]
    enough = [*few, Vote("y", "ba", 0.6)]
    cal, prior = batch_calibrate(enough)
    assert prior.applied and prior.votes == MIN_VOTES and cal[0].p_a != 0.8 and cal[0].p_a_raw == 0.8


def test_the_prior_keeps_a_real_difference_between_first_and_second():
    """Both pairs' first response is better in BOTH orders (ab 0.8 / ba 0.4; ab 0.6 / ba 0.2): p_first 0.7
    each. Pooled over the orders the mean P(A) is 0.5, no position prior, so nothing moves; a prior per
    order (0.7 in "ab", 0.3 in "ba") would have cancelled the real difference and made both 0.5."""
    v1 = make_verdict([Vote("x", "ab", 0.8), Vote("x", "ba", 0.4)], ["x"])
    v2 = make_verdict([Vote("x", "ab", 0.6), Vote("x", "ba", 0.2)], ["x"])
    (c1, c2), prior = calibrate_verdicts([v1, v2], min_votes=4)
    assert prior.p_a == pytest.approx(0.5) and prior.by_order["ab"]["p_a"] == pytest.approx(0.7)
    assert [c1.p_first, c2.p_first] == pytest.approx([0.7, 0.7])
    assert [c1.p_first_raw, c2.p_first_raw] == pytest.approx([0.7, 0.7])


def test_calibrated_verdict_combines_the_shifted_orders_and_keeps_the_raw():
    """A judge that leans to (A): pair 1 ab 0.9 / ba 0.6, pair 2 ab 0.7 / ba 0.8. Prior: mean P(A) 0.75,
    so p -> p / (p + 3 (1 - p)): 0.9 -> 0.75, 0.6 -> 1/3, 0.7 -> 7/16, 0.8 -> 4/7. Pair 1: raw p_first
    (0.9 + 0.4) / 2 = 0.65 -> (0.75 + 2/3) / 2 = 0.7083; pair 2: raw (0.7 + 0.2) / 2 = 0.45 ->
    (7/16 + 3/7) / 2 = 0.4330. Pair 1 was position-inconsistent (A won in both orders) and is not after."""
    v1 = make_verdict([Vote("x", "ab", 0.9), Vote("x", "ba", 0.6)], ["x"])
    v2 = make_verdict([Vote("x", "ab", 0.7), Vote("x", "ba", 0.8)], ["x"])
    assert v1.p_first == pytest.approx(0.65) and v1.p_first_raw is None
    (c1, c2), prior = calibrate_verdicts([v1, v2], min_votes=4)
    assert prior.p_a == pytest.approx(0.75)
    assert [v.p_a for v in (*c1.votes, *c2.votes)] == pytest.approx([0.75, 1 / 3, 7 / 16, 4 / 7])
    assert c1.p_first == pytest.approx((0.75 + 2 / 3) / 2) and c1.p_first_raw == pytest.approx(0.65)
    assert c2.p_first == pytest.approx((7 / 16 + 3 / 7) / 2) and c2.p_first_raw == pytest.approx(0.45)
    assert v1.position_consistent is False and c1.position_consistent is True
    assert [v.p_first for v in raw_verdicts([c1, c2])] == pytest.approx([0.65, 0.45])
    assert c1.votes[0].to_record() == {"principle_id": "x", "order": "ab", "p_a": pytest.approx(0.75), "reason": None,
                                       "p_a_raw": 0.9}
    same, not_applied = calibrate_verdicts([v1, v2])  # 4 votes < MIN_VOTES: as read
    assert same == [v1, v2] and not not_applied.applied


def test_judge_pairs_returns_the_votes_as_read_even_when_calibrating():
    """``judge_pairs`` never calibrates: one engine call is not the run, so its pairs are no prior. The
    fake judge's p_a is 0.9 for every prompt, a pure (A) prior: calibrated over the run, every vote is 0.5."""
    from generator.engines.fake import FakeEngine

    const = load_constitution(DEFAULT_PATH)
    engine = FakeEngine(scorer=lambda prompt, options: {"A": math.log(0.9), "B": math.log(0.1)})
    pairs = [PAIR, Pair("w2", CONVERSATION, "Leave it.", "Call a pest-control service.")]
    read = judge_pairs(engine, const, pairs, JudgeConfig(principles_per_pair=2, calibrate="batch"))
    assert all(v.p_a == pytest.approx(0.9) and v.p_a_raw is None for p in read for v in p.votes)
    cal, prior = calibrate_verdicts(read, min_votes=4)
    assert prior.p_a == pytest.approx(0.9)
    assert all(v.p_a == pytest.approx(0.5) and v.p_a_raw == pytest.approx(0.9) for p in cal for v in p.votes)
    assert all(isinstance(v, PairVerdict) and v.p_first_raw == pytest.approx(0.5) for v in cal)


def test_calibration_and_layout_refuse_cot():
    with pytest.raises(ValueError, match="shared-prefix has no chain-of-thought"):
        JudgeConfig(cot=True, layout="shared-prefix")
    with pytest.raises(ValueError, match="--calibrate batch"):
        JudgeConfig(cot=True, calibrate="batch")
    assert JudgeConfig(cot=True).resolved_layout == "cai"


# --- layout ----------------------------------------------------------------------------------------


def _prompts(layout: str, k: int = 4) -> tuple[list, list[str]]:
    const = load_constitution(DEFAULT_PATH)
    config = JudgeConfig(principles_per_pair=k, layout=layout, seed=3)
    tasks, _ = build_tasks(const, [PAIR], config)
    return tasks, render_direct(tasks, const.few_shot_compare(), config)


def test_shared_prefix_layout_renders_its_template_and_is_in_the_spec():
    assert templates_used(JudgeConfig(layout="shared-prefix")) == [PAIRWISE_SHARED]
    tasks, prompts = _prompts("shared-prefix")
    for t, p in zip(tasks, prompts, strict=True):
        tail = f"</response>\n{t.context['principle']}\nThe answer is: ("
        assert p.endswith(tail) and p.count("<response>") == p.count("</response>")


def test_shared_prefix_prompts_share_the_token_prefix(embedded_model_dir):
    """With the real tokenizer: the prompts of one (pair, order) are token for token the same up to
    the principle's question (so a prefix cache reuses it), and that prefix holds both responses;
    in the CAI layout the principles part before the responses."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    tasks, prompts = _prompts("shared-prefix")
    by_order: dict[str, list[tuple]] = {}
    for t, p in zip(tasks, prompts, strict=True):
        by_order.setdefault(t.order, []).append((t, p))
    for order, group in by_order.items():
        assert len(group) >= 2, "the test needs two principles per order (change the seed)"
        prefix = group[0][1][: group[0][1].rindex(group[0][0].context["principle"])]
        assert prefix.endswith("</response>\n") and PAIR.first in prefix and PAIR.second in prefix
        prefix_ids = tok(prefix, add_special_tokens=False)["input_ids"]
        for t, p in group:
            ids = tok(p, add_special_tokens=False)["input_ids"]
            assert ids[: len(prefix_ids)] == prefix_ids, f"{order}/{t.principle_id}: the prefix tokenizes differently"
            assert p.startswith(prefix) and len(ids) > len(prefix_ids)
    cai_tasks, cai = _prompts("cai")
    ab = [tok(p, add_special_tokens=False)["input_ids"] for t, p in zip(cai_tasks, cai, strict=True) if t.order == "ab"]
    shared_len = len(os.path.commonprefix(ab))
    assert shared_len < len(prefix_ids) - 20  # CAI: the principles differ before the responses


# --- scheduling and the ideal cache ---------------------------------------------------------------


def _fresh_chars(prompts: list[str], waves: list[list[int]]) -> int:
    """Characters computed afresh when each wave's prompts share nothing among themselves and reuse
    everything earlier waves computed (a perfect, character-granular cache)."""
    done: list[str] = []
    total = 0
    for wave in waves:
        total += sum(len(prompts[i]) - max((len(os.path.commonprefix((prompts[i], d))) for d in done), default=0)
                     for i in wave)
        done += [prompts[i] for i in wave]
    return total


def test_cache_waves_send_each_shared_prefix_once():
    """Few-shot block F, two conversations, both orders, three questions: with margin 0, no prefix
    is computed twice: the fresh characters equal those of sending the prompts one by one in text
    order, while one single call would recompute every shared prefix."""
    prompts = [f"F{'f' * 50}|C{c}{'c' * 30}|{o}{'r' * 40}|Q{q}{'q' * 10}"
               for c in (1, 2) for o in ("ab", "ba") for q in (1, 2, 3)]
    prompts = prompts[::-1]  # any input order
    waves = cache_waves(prompts, margin=0)
    assert sorted(i for w in waves for i in w) == list(range(len(prompts)))
    one_by_one = [[i] for i in sorted(range(len(prompts)), key=prompts.__getitem__)]
    assert _fresh_chars(prompts, waves) == _fresh_chars(prompts, one_by_one)
    assert _fresh_chars(prompts, [list(range(len(prompts)))]) == sum(map(len, prompts))
    assert len(waves) < len(prompts) / 2 and len(waves[0]) == 1


def test_ideal_uncached_tokens_hand_worked():
    """Blocks of 4: the first prompt computes all 10 tokens; the second shares blocks [1-4] and
    [1-8] (2 blocks), so 10 - 8 = 2; a repeat of the first may reuse at most floor(9/4) = 2 blocks
    (the last token is always computed): 2; with a warm-up that saw [1..4], the first computes 6."""
    a = list(range(1, 11))
    b = list(range(1, 9)) + [99, 100]
    assert ideal_uncached_tokens([a, b, a], block=4) == [10, 2, 2]
    assert ideal_uncached_tokens([a], seen=[[1, 2, 3, 4]], block=4) == [6]
    assert ideal_uncached_tokens([[1, 2, 3, 4]], seen=[[1, 2, 3, 4]], block=4) == [4]  # 3 tokens: no full block


def test_judge_eval_reports_both_calibrations(shared_data, tmp_path):
    """One judge-eval run reports agreement, position consistency and ECE with intervals for the
    votes as read and batch-calibrated; the headline follows ``--calibrate``; the report shows both."""
    from judge.evaluate import JudgeEvalConfig, run_judge_eval

    human = shared_data / "hh-rlhf-harmless-base-test.jsonl.gz"
    results = {}
    for mode in ("none", "batch"):
        config = JudgeEvalConfig(human=human, out=tmp_path / mode, limit=6, resamples=100, judge=JudgeConfig(
            engine="fake", model="fake-judge", layout="shared-prefix", calibrate=mode, principles_per_pair=2))
        results[mode] = run_judge_eval(config)
    for result in results.values():
        assert set(result["by_calibration"]) == {"none", "batch"}
        for m in result["by_calibration"].values():
            assert m["agreement"]["n"] + m["agreement"]["ties"] + m["agreement"]["unscored"] == 6
            assert {"lo", "hi"} <= set(m["agreement"]) and {"lo", "hi"} <= set(m["position_consistency"])
            assert m["calibration"]["kind"] == "top-label"
        assert result["settings"]["layout"] == "shared-prefix"
    assert results["none"]["by_calibration"] == results["batch"]["by_calibration"]
    prior = results["batch"]["by_calibration"]["batch"]["prior"]  # 6 pairs: too few votes, recorded so
    assert prior["votes"] < MIN_VOTES and prior["applied"] is False and "needs at least" in prior["reason"]
    for mode in ("none", "batch"):
        assert results[mode]["agreement"] == results[mode]["by_calibration"][mode]["agreement"]
    report = (tmp_path / "batch" / "report.md").read_text()
    assert "## Batch calibration" in report and "| batch |" in report and "layout shared-prefix" in report


def test_bench_speed_helpers(monkeypatch):
    """The bench's fit and parsers: time doubling with the pairs is exponent 1, quadrupling 2; the
    engine's thread count is read from its CPU binding; bad sizes are one clear error."""
    from bench.args import BenchArgumentError
    from bench.judge_speed import engine_threads, matmul_peak_gflops, parse_sizes, scaling_exponent

    assert scaling_exponent([32, 64, 128], [10.0, 20.0, 40.0]) == pytest.approx(1.0)
    assert scaling_exponent([32, 64, 128], [10.0, 40.0, 160.0]) == pytest.approx(2.0)
    assert scaling_exponent([32], [10.0]) is None
    assert parse_sizes("4, 8,16") == [4, 8, 16]
    for bad in ("0,8", "a,b", ""):
        with pytest.raises(BenchArgumentError, match="--scaling-sizes"):
            parse_sizes(bad)
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-1,3")
    assert engine_threads() == 3
    peak = matmul_peak_gflops("float32", 1, n=64, seconds=0.05)
    assert peak["peak_gflops"] > 0 and peak["threads"] == 1


def test_judge_run_records_layout_calibration_and_raw_votes(tmp_path):
    """``rlaif judge --layout shared-prefix --calibrate batch``: both go into the hashed spec and rows carry
    the shared template's hash. Three pairs hold 12 votes, too few for a prior: the labels stay as read
    and the manifest says so. Sixteen pairs hold enough: every vote of the constant 0.7 judge is 0.5,
    keeps 0.7 as ``p_a_raw``, and the manifest records the prior 0.7."""
    import json

    from generator.engines.fake import FakeEngine
    from judge.build import run_judge
    from plumbing.runs import read_manifest
    from prompts import template_sha256
    from rlaif.runs import load

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"q{i}", "response_a": f"yes {i}", "response_b": f"no {i}"}) + "\n"
                             for i in range(16)))
    engine = FakeEngine(scorer=lambda prompt, options: {"A": math.log(0.7), "B": math.log(0.3)})
    few, many = tmp_path / "few", tmp_path / "many"
    summary = run_judge(JudgeConfig(input=str(pairs), out=str(few), principles_per_pair=2, layout="shared-prefix",
                                    calibrate="batch", limit=3), engine=engine)
    spec = read_manifest(few)["spec"]
    assert spec["layout"] == "shared-prefix" and spec["calibrate"] == "batch"
    assert spec["calibration"] == {"prior": "mean p_a over every scored vote of the run, both orders",
                                   "min_votes": MIN_VOTES}
    assert spec["template_sha256"] == template_sha256([PAIRWISE_SHARED], None)
    rows = load(few)
    assert set(rows["template_sha256"]) == {spec["template_sha256"]}
    votes = [v for row in rows["votes"] for v in row]
    assert votes and all(v["p_a"] == pytest.approx(0.7) and v["p_a_raw"] is None for v in votes)
    recorded = read_manifest(few)["calibration"]
    assert (recorded["applied"], recorded["votes"], recorded["p_a"]) == (False, len(votes), pytest.approx(0.7))
    assert "not calibrated" in summary.line() and f"needs at least {MIN_VOTES}" in recorded["reason"]
    summary = run_judge(JudgeConfig(input=str(pairs), out=str(many), principles_per_pair=4, calibrate="batch"),
                        engine=engine)
    votes = [v for row in load(many)["votes"] for v in row]
    assert len(votes) >= MIN_VOTES
    assert all(v["p_a_raw"] == pytest.approx(0.7) and v["p_a"] == pytest.approx(0.5) for v in votes)
    recorded = read_manifest(many)["calibration"]
    assert (recorded["applied"], recorded["votes"], recorded["p_a"]) == (True, len(votes), pytest.approx(0.7))
    assert "calibrated: P(A) 0.700" in summary.line()
