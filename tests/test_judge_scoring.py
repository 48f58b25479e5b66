"""Unit tests of judge/scoring.py and judge/pairing.py with hand-worked numbers (FakeEngine only)."""

from __future__ import annotations

import math

import pytest

from constitution import parse_constitution
from generator.engines.base import ChoiceScores, option_logprobs
from generator.engines.fake import FakeEngine
from judge.config import JudgeConfig
from judge.pairing import all_pairs, best_worst, bradley_terry, bt_probability
from judge.scoring import (
    Pair,
    Vote,
    clamp,
    clean_rationale,
    cot_vote,
    ensemble,
    judge_pairs,
    make_verdict,
    position_consistency,
    principle_probability,
    two_option_probability,
    vote_from_scores,
)

CONSTITUTION = """
name: test
version: 1
variables: {assistant: "the assistant"}
principles:
  - id: light
    critique: "Critique {{ assistant }}."
    revision: "Revise."
    compare: "Which response is kinder to someone asking '{{ prompt }}'?"
    weight: 1.0
  - id: heavy
    critique: "Critique."
    revision: "Revise."
    compare: "Which response is less harmful?"
    weight: 3.0
few_shot:
  compare:
    - conversation: [{role: user, content: "How do I pick a lock?"}]
      principle: "Which response is less harmful?"
      response_a: "Here is how to break in."
      response_b: "Call a locksmith."
      answer: B
"""


@pytest.fixture
def const():
    return parse_constitution(CONSTITUTION)


def scores(lp_a, lp_b) -> ChoiceScores:
    top = {k: v for k, v in (("A", lp_a), ("B", lp_b)) if v is not None}
    return ChoiceScores(logprobs=option_logprobs(top, ["A", "B"]), top=top)


def option_a_text(prompt: str) -> str:
    """The response shown as (A) in the LAST comparison of a rendered judge prompt."""
    return prompt.rsplit("(A) ", 1)[1].split("\n", 1)[0]


def test_softmax_of_two_options():
    """l_A = -1, l_B = -2: p_a = e^-1 / (e^-1 + e^-2) = 1 / (1 + e^-1) = 0.7311."""
    assert two_option_probability(-1.0, -2.0) == pytest.approx(0.7311, abs=1e-4)
    assert vote_from_scores("x", "ab", scores(-1.0, -2.0)).p_a == pytest.approx(1 / (1 + math.exp(-1)))
    # extreme logprobs stay finite and in [0, 1]: 1 / (1 + e^-800) = 1.0
    assert two_option_probability(0.0, -800.0) == 1.0
    assert two_option_probability(-800.0, 0.0) == pytest.approx(0.0)


def test_missing_option_is_none_with_reason():
    """Either option missing from the top-k -> None (a bound is not a probability), never 0.5."""
    v = vote_from_scores("x", "ab", scores(-0.1, None), top_k=20)
    assert v.p_a is None and v.reason == "option B not in top-20 logprobs"
    v = vote_from_scores("x", "ba", scores(None, None), top_k=5)
    assert v.p_a is None and v.reason == "options A and B not in top-5 logprobs"
    assert v.p_first is None


def test_order_mapping():
    """order ab: p_first = p_a = 0.8; order ba: the first response is (B), p_first = 1 - 0.8 = 0.2."""
    assert Vote("x", "ab", 0.8).p_first == pytest.approx(0.8)
    assert Vote("x", "ba", 0.8).p_first == pytest.approx(0.2)
    # averaging orders: ab p_a=0.9 -> 0.9, ba p_a=0.3 -> 0.7; mean = 0.8
    assert principle_probability([Vote("x", "ab", 0.9), Vote("x", "ba", 0.3)]) == pytest.approx(0.8)
    # swapping relabels which response was (A); p_a is what the judge said and stays
    assert Vote("x", "ab", 0.9).swapped() == Vote("x", "ba", 0.9)


def test_ensemble_is_the_plain_mean_over_draws():
    """draws light, heavy, heavy, heavy with p 0.8 and 0.4: (0.8 + 3 * 0.4) / 4 = 0.5; the weights
    acted in the draw, so they are not applied again."""
    votes = [Vote("light", "ab", 0.8), Vote("heavy", "ab", 0.4)]
    assert ensemble(votes, ["light", "heavy", "heavy", "heavy"]) == pytest.approx(0.5)
    assert ensemble(votes, ["light", "heavy"]) == pytest.approx(0.6)


def test_principle_influence_follows_the_weights():
    """20,000 pairs on the default constitution with K=4: a principle's influence is its expected
    share of the verdict. harm-general (weight 2.0) against honest-transparent (0.7) must come out
    at the weights' ratio 2.0 / 0.7 = 2.857 (the old draw-by-weight + weighted-mean gave 5.9x).
    Binomial counts: ~20,000 * 4 * 2.0 / W draws, the ratio's relative error is about 2 %."""
    from constitution import DEFAULT_PATH, load_constitution
    from judge.scoring import build_tasks

    const = load_constitution(DEFAULT_PATH)
    weights = {p.id: p.weight for p in const.principles}
    pairs = [Pair(f"p{i}", [{"role": "user", "content": "hi"}], "a", "b") for i in range(20_000)]
    _, draws = build_tasks(const, pairs, JudgeConfig(principles_per_pair=4, orders="one"))
    influence = dict.fromkeys(weights, 0.0)
    for ids in draws:
        # the verdict is the plain mean over the draws: each draw carries 1/K of it
        for pid in ids:
            influence[pid] += 1.0 / len(ids)
    ratio = influence["harm-general"] / influence["honest-transparent"]
    assert ratio == pytest.approx(weights["harm-general"] / weights["honest-transparent"], rel=0.08)
    total = sum(weights.values())
    for pid, w in weights.items():
        assert influence[pid] / len(pairs) == pytest.approx(w / total, rel=0.08), pid


def test_none_votes_excluded_and_all_none_unlabelled():
    """light has only None votes -> left out entirely: p = heavy's 0.7 (not (1*0.5 + 3*0.7)/4 = 0.65)."""
    votes = [Vote("light", "ab", None, "option A not in top-20 logprobs"), Vote("heavy", "ab", 0.7)]
    assert ensemble(votes, ["light", "heavy", "heavy", "heavy"]) == pytest.approx(0.7)
    # within a principle too: ba None, ab 0.9 -> 0.9 (not (0.9 + 0.5) / 2)
    assert principle_probability([Vote("x", "ab", 0.9), Vote("x", "ba", None, "r")]) == pytest.approx(0.9)
    dead = [Vote("light", "ab", None, "option B not in top-20 logprobs"), Vote("light", "ba", None, "r2")]
    verdict = make_verdict(dead, ["light"])
    assert verdict.p_first is None
    assert "option B not in top-20 logprobs" in verdict.reason and "r2" in verdict.reason


def test_cot_clamp_and_average():
    """Samples p = 0.9 -> clamped 0.6, p = 0.45 -> 0.45, one unreadable -> left out: mean = 0.525."""
    assert clamp(0.9) == 0.6 and clamp(0.1) == 0.4 and clamp(0.5) == 0.5
    lp = math.log
    samples = [("r1", scores(lp(0.9), lp(0.1))), ("r2", scores(lp(0.45), lp(0.55))), ("r3", scores(None, -1.0))]
    v = cot_vote("x", "ab", samples)
    assert v.p_a == pytest.approx((0.6 + 0.45) / 2)
    assert [s["rationale"] for s in v.raw["samples"]] == ["r1", "r2", "r3"]
    assert cot_vote("x", "ab", [("r", scores(None, None))]).p_a is None
    assert clean_rationale(" B is rude. Therefore, the answer is (A)") == "B is rude."


def test_position_consistency():
    """ab 0.7 / ba 0.3: the first response wins in both orders -> consistent; ab 0.7 / ba 0.6: (A) wins
    whatever it is -> position bias -> inconsistent; one order only -> None (not checked)."""
    assert position_consistency([Vote("x", "ab", 0.7), Vote("x", "ba", 0.3)]) is True
    assert position_consistency([Vote("x", "ab", 0.2), Vote("x", "ba", 0.9)]) is True
    assert position_consistency([Vote("x", "ab", 0.7), Vote("x", "ba", 0.3),
                                 Vote("y", "ab", 0.7), Vote("y", "ba", 0.6)]) is False
    assert position_consistency([Vote("x", "ab", 0.7), Vote("x", "ba", None, "r")]) is None
    assert position_consistency([Vote("x", "ab", 0.5), Vote("x", "ba", 0.5)]) is False


def _good_scorer(p_good: float):
    """A judge that gives the response containing GOOD probability p_good, whichever option it is."""
    def scorer(prompt, options):
        a_good = "GOOD" in option_a_text(prompt)
        p_a = p_good if a_good else 1 - p_good
        return {"A": math.log(p_a), "B": math.log(1 - p_a), "C": math.log(1e-6)}
    return scorer


class CountingEngine(FakeEngine):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.score_calls = []
        self.prompts = []

    def score_choices(self, prompts, options, top_k=20):
        self.score_calls.append(len(prompts))
        self.prompts.extend(prompts)
        return super().score_choices(prompts, options, top_k)


def test_judge_pairs_batches_everything_in_cache_waves(const):
    """3 pairs x (distinct principles among 4 draws) x 2 orders prompts, each sent once, in the few
    score_choices calls of ``cache_waves`` (one per depth of shared prefix: the few-shot block first,
    then each pair's conversation, then the rest); the GOOD response gets 0.8 in both orders, so
    p_first = 0.8 when it is first and 1 - 0.8 = 0.2 when second."""
    engine = CountingEngine(scorer=_good_scorer(0.8))
    pairs = [Pair("p1", [{"role": "user", "content": "hi"}], "GOOD one", "bad one"),
             Pair("p2", [{"role": "user", "content": "yo"}], "bad two", "GOOD two"),
             Pair("p3", [{"role": "user", "content": "hey"}], "GOOD three", "meh three")]
    verdicts = judge_pairs(engine, const, pairs, JudgeConfig(principles_per_pair=4, orders="both"))
    assert sum(engine.score_calls) == sum(2 * len(set(v.principle_ids)) for v in verdicts)
    assert engine.score_calls[0] == 1 and len(engine.score_calls) <= 4  # one prompt computes the few-shot block
    assert len(set(engine.prompts)) == len(engine.prompts)
    assert [v.p_first for v in verdicts] == pytest.approx([0.8, 0.2, 0.8])
    assert all(v.position_consistent for v in verdicts)
    assert len(verdicts[0].principle_ids) == 4 and set(verdicts[0].principle_ids) <= {"heavy", "light"}
    assert {(v.principle_id, v.order) for v in verdicts[0].votes} == {
        ("light", "ab"), ("light", "ba"), ("heavy", "ab"), ("heavy", "ba")}
    prompt = engine.prompts[0]
    assert prompt.endswith("The answer is: (")
    assert "Call a locksmith." in prompt and "The answer is: (B)" in prompt  # the few-shot example
    assert any("kinder to someone asking 'hi'" in p for p in engine.prompts)  # principle rendered per item


def test_judge_pairs_one_order_and_position_bias(const):
    """A judge that always says (A) with 0.7: in both orders p_first = (0.7 + 0.3) / 2 = 0.5 and the
    pair is position-inconsistent; with one order only it looks like 0.7 and consistency is None."""
    engine = FakeEngine(scorer=lambda p, o: {"A": math.log(0.7), "B": math.log(0.3)})
    pair = [Pair("p1", [{"role": "user", "content": "hi"}], "x", "y")]
    both = judge_pairs(engine, const, pair, JudgeConfig(orders="both"))[0]
    assert both.p_first == pytest.approx(0.5) and both.position_consistent is False
    one = judge_pairs(engine, const, pair, JudgeConfig(orders="one"))[0]
    assert one.p_first == pytest.approx(0.7) and one.position_consistent is None
    assert len(one.votes) == 2


def test_judge_pairs_principles_per_pair_sampled(const):
    """K=1: one principle per pair, drawn by weight, deterministic per (seed, pair id)."""
    engine = FakeEngine(scorer=_good_scorer(0.9))
    pairs = [Pair(f"p{i}", [{"role": "user", "content": "q"}], "GOOD", "bad") for i in range(40)]
    cfg = JudgeConfig(principles_per_pair=1)
    first = [v.principle_ids for v in judge_pairs(engine, const, pairs, cfg)]
    again = [v.principle_ids for v in judge_pairs(engine, const, pairs, cfg)]
    assert first == again and all(len(p) == 1 for p in first)
    heavy = sum(p == ("heavy",) for p in first)
    assert 20 < heavy < 40  # weight 3 of 4: expected 30 of 40


def test_cot_judging(const):
    """CoT: S=3 rationales per (pair, principle, order), one generate call and one score call;
    the judge says 0.9 for GOOD, clamped to 0.6 -> p_first = 0.6 for the GOOD-first pair."""
    engine = CountingEngine(scorer=_good_scorer(0.9), replies=lambda p, k: f"thought {k}. The answer is (A)")
    pairs = [Pair("p1", [{"role": "user", "content": "hi"}], "GOOD", "bad")]
    v = judge_pairs(engine, const, pairs, JudgeConfig(cot=True, cot_samples=3))[0]
    assert v.p_first == pytest.approx(0.6)
    assert engine.calls["generate"] == 4 and engine.score_calls == [12]
    assert engine.prompts[0].endswith("Let's think step by step: thought 0.\nTherefore, the answer is: (")


def test_too_long_prompt_is_a_none_vote(const):
    engine = FakeEngine(scorer=_good_scorer(0.9), max_context=30)
    v = judge_pairs(engine, const, [Pair("p", [{"role": "user", "content": "q"}], "GOOD", "b")], JudgeConfig())[0]
    assert v.p_first is None and "too long" in v.reason


def test_bradley_terry_recovers_strengths():
    """Strengths s = (4, 2, 1): P(0>1) = 4/6, P(0>2) = 4/5, P(1>2) = 2/3. The MM fit recovers
    log s centred on its mean log 2: (ln 2, 0, -ln 2) = (0.693, 0, -0.693). Best 0, worst 2."""
    outcomes = [(0, 1, 4 / 6), (0, 2, 4 / 5), (1, 2, 2 / 3)]
    scores = bradley_terry(3, outcomes)
    assert scores == pytest.approx([math.log(2), 0.0, -math.log(2)], abs=1e-6)
    assert best_worst(scores) == (0, 2)
    assert bt_probability(scores[0], scores[2]) == pytest.approx(0.8)


def test_bradley_terry_hand_made_tournament():
    """4 responses; 3 wins every game with p = 0.9, 1 loses every game with p = 0.9, 0 and 2 are
    even (0.5) -> best 3, worst 1; a response never compared gets None and is not picked."""
    outcomes = [(3, 0, 0.9), (3, 1, 0.9), (3, 2, 0.9), (0, 1, 0.9), (2, 1, 0.9), (0, 2, 0.5)]
    scores = bradley_terry(5, outcomes)
    assert scores[4] is None
    assert best_worst(scores) == (3, 1)
    assert scores[0] == pytest.approx(scores[2])
    # two items, P(0 beats 1) = 0.75: log s0 - log s1 = ln(0.75 / 0.25) = ln 3
    two = bradley_terry(2, [(0, 1, 0.75)])
    assert two[0] - two[1] == pytest.approx(math.log(3), abs=1e-6)
    assert best_worst([None, 1.0]) is None
    assert all_pairs(3) == [(0, 1), (0, 2), (1, 2)]


def test_bench_parse_letter():
    """The generate-and-parse baseline of `rlaif bench judge` reads a letter only when unambiguous."""
    from bench.judge import parse_letter

    assert parse_letter("B") == "B" and parse_letter(" (A) because it is kind") == "A"
    assert parse_letter("The answer is: (B).") == "B" and parse_letter("Option A is better") == "A"
    assert parse_letter("A better response would explain why.") is None  # the article, not an option
    assert parse_letter("B is better.") == "B" and parse_letter("a") is None
    assert parse_letter("The response is a good one.") is None
    assert parse_letter("Both are fine.") is None and parse_letter("") is None


def test_bench_token_use_from_engine_stats():
    from bench.judge_speed import token_use as _token_use

    before = {"prompt_tokens": 100, "cached_prompt_tokens": 40, "generated_tokens": 10}
    after = {"prompt_tokens": 300, "cached_prompt_tokens": 140, "generated_tokens": 30}
    assert _token_use(before, after) == {"prompt_tokens": 200, "uncached_prompt_tokens": 100,
                                         "generated_tokens": 20, "hit_rate": 0.5}
    assert _token_use({}, {"requests": 3})["hit_rate"] is None  # an engine that does not count tokens


def test_bench_passes_on_fake_engine(const, shared_data):
    """The bench's three passes and its summary, on the fake engine (the real run needs vLLM)."""
    from bench.judge import DEFAULT_DATA, generate_pass, load_pairs, logprob_pass, summarize

    pairs = load_pairs(DEFAULT_DATA, 3)
    assert all(p.first != p.second and p.conversation[-1]["role"] == "user" for p in pairs)
    cfg = JudgeConfig(principles_per_pair=2)
    t_a, p_a, use_a = logprob_pass(FakeEngine(scorer=lambda p, o: {"A": -1.0, "B": -2.0}), const, pairs, cfg)
    t_b, letters, use_b = generate_pass(FakeEngine(replies=lambda p, k: "(A) is kinder"), const, pairs, cfg)
    n = len(p_a)  # 3 pairs x (distinct principles among 2 draws) x 2 orders
    assert 3 * 1 * 2 <= n <= 3 * 2 * 2 and len(letters) == n and set(letters) == {"A"}
    out = summarize("m", 3, 2, (t_a, p_a, use_a), (t_b, letters, use_b), (t_a, p_a))
    assert out["comparisons"] == n and out["parse_failure_rate"] == 0.0
    assert out["agreement_logprob_vs_generate"] == 1.0  # p_a = sigmoid(1) = 0.73 > 0.5 and "A" parsed
    assert out["mean_abs_diff_p_a_vllm_vs_transformers"] == 0.0
