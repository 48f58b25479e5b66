"""Verifiable rewards (align/rewards/): registry, gsm8k on real data, math-verify forms, format and
length by hand-worked values, the weighted combination, the code reward through the sandbox."""

from __future__ import annotations

import json
import re

import pytest

from align.rewards import REWARDS, combine, get_reward
from align.rewards import gsm8k as gsm8k_mod
from align.rewards.base import completion_text
from align.rewards.sandbox import sandbox_unavailable
from align.rewards.shape import make_format_reward, make_length_reward


def _conv(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


# --- registry -------------------------------------------------------------------------------

def test_registry_names_and_unknown_name_lists_known():
    assert set(REWARDS) == {"gsm8k", "math", "code", "format", "length"}
    with pytest.raises(KeyError, match="known: code, format, gsm8k, judge, length, math"):
        get_reward("gsmk8")


def test_user_reward_by_module_function():
    from align.rewards.code import code_reward

    assert get_reward("align.rewards.code:code_reward") is code_reward
    with pytest.raises(TypeError, match="not a reward's"):  # combine(reward_funcs, weights) builds one
        get_reward("align.rewards.combine:combine")
    with pytest.raises(TypeError, match="not callable"):
        get_reward("align.rewards.sandbox:UID_BASE")
    with pytest.raises(KeyError, match="has no attribute"):
        get_reward("align.rewards.combine:nope")
    with pytest.raises(KeyError, match="cannot be imported"):
        get_reward("no_such_module_xyz:f")


def test_completion_text_string_and_conversational():
    assert completion_text("a") == "a"
    assert completion_text(_conv("b")) == "b"
    with pytest.raises(TypeError):
        completion_text(3)


# --- gsm8k ----------------------------------------------------------------------------------

def test_gsm8k_scores_every_gold_solution(shared_data):
    rows = [json.loads(line) for line in (shared_data / "gsm8k-train-1000.jsonl").read_text().splitlines()]
    assert len(rows) == 1000
    gold = [r["answer"] for r in rows]
    reward = get_reward("gsm8k")
    assert reward(None, gold, answer=gold) == [1.0] * 1000
    # the marked answer is read as the integer GSM8K wrote after its last ####, never another number
    written = [int(g.rsplit("####", 1)[1].strip().replace(",", "")) for g in gold]
    assert [gsm8k_mod.parse_number(gsm8k_mod.final_answer(g) or "") for g in gold] == written

    def plus_one(solution: str) -> str:
        head, tail = solution.rsplit("####", 1)
        n = int(tail.strip().replace(",", ""))
        return f"{head}#### {n + 1}"

    wrong = [plus_one(g) for g in gold]
    assert reward(None, [_conv(w) for w in wrong], answer=gold) == [0.0] * 1000


@pytest.mark.parametrize("completion, gold, score", [
    ("so she pays $1,800.", "#### 1800", 1.0),
    ("The answer is 18 dollars", "blah\n#### 18", 1.0),
    ("It is 18.0", "#### 18", 1.0),
    ("50% of them", "#### 50", 1.0),
    ("#### 17\nthen 18 later", "#### 17", 1.0),  # the marker wins over the last number
    ("-3 degrees", "#### -3", 1.0),
    ("18.5", "#### 18", 0.0),
    ("no number here", "#### 18", 0.0),
])
def test_gsm8k_normalisation(completion, gold, score):
    assert gsm8k_mod.score_one(completion, gold).score == score


def test_gsm8k_gold_without_number_is_none():
    res = gsm8k_mod.score_one("18", "#### unknown")
    assert res.score is None and res.status == "bad_gold" and "no number" in res.reason
    assert get_reward("gsm8k")(None, ["18"], answer=["#### ?"]) == [None]


def test_gsm8k_missing_column_says_which():
    with pytest.raises(KeyError, match="needs a 'answer' column"):
        get_reward("gsm8k")(None, ["1"], question=["q"])


# --- math -----------------------------------------------------------------------------------

@pytest.mark.parametrize("completion, gold", [
    ("$0.5$", "\\frac{1}{2}"),
    ("The answer is $\\boxed{2}$.", "2"),
    ("$x=3$", "3"),
    ("$\\frac{2}{4}$", "$\\frac{1}{2}$"),
    ("$2^{1/2}$", "\\sqrt{2}"),
    ("$(x+1)^2$", "x^2+2x+1"),
    ("$\\{2,1\\}$", "\\{1,2\\}"),
    ("so $\\boxed{0.75}$", "\\boxed{\\frac{3}{4}}"),
])
def test_math_equivalent_forms(completion, gold):
    res = get_reward("math").results(None, [completion], answer=[gold])[0]
    assert res.score == 1.0, res


@pytest.mark.parametrize("completion, gold", [
    ("$0.51$", "\\frac{1}{2}"),
    ("$\\boxed{3}$", "2"),
    ("$x=4$", "3"),
    ("$\\sqrt{3}$", "\\sqrt{2}"),
    ("$(x+1)^3$", "x^2+2x+1"),
    ("no answer", "2"),
])
def test_math_near_misses_rejected(completion, gold):
    assert get_reward("math")(None, [_conv(completion)], answer=[gold]) == [0.0]


def test_math_unparseable_gold_is_none():
    res = get_reward("math").results(None, ["$2$"], answer=["@@@"])[0]
    assert res.score is None and "cannot parse the gold" in res.reason


# --- format and length ----------------------------------------------------------------------

@pytest.mark.parametrize("text, score", [
    ("<think>2+2 is 4</think> The answer is 4.", 1.0),
    ("  <think>a\nb</think>\n4", 1.0),
    ("<think>2+2 is 4</think>", 0.0),   # no answer after the thinking
    ("The answer is 4.", 0.0),          # no thinking
    ("<think></think> 4", 0.0),         # empty thinking
    ("4 <think>x</think> 4", 0.0),      # text before the thinking
])
def test_format_default_pattern(text, score):
    assert get_reward("format")(None, [text, _conv(text)]) == [score, score]


def test_format_custom_pattern_and_bad_pattern():
    f = make_format_reward(r"^Answer: \d+$")
    assert f(None, ["Answer: 12", "Answer: twelve"]) == [1.0, 0.0]
    with pytest.raises(re.error):
        make_format_reward("(unclosed")


def test_length_hand_worked():
    f = make_length_reward(target=100, tolerance=10, falloff=50)
    words = lambda n: " ".join(["w"] * n)  # noqa: E731
    assert f(None, [words(105), words(90), words(130), words(40), words(185), _conv(words(70))]) == \
        [1.0, 1.0, pytest.approx(0.6), 0.0, 0.0, pytest.approx(0.6)]
    with pytest.raises(ValueError, match="falloff > 0"):
        make_length_reward(100, 10, 0)


# --- combine --------------------------------------------------------------------------------

def test_combine_hand_worked():
    both = combine([get_reward("gsm8k"), get_reward("format")], [1.0, 0.5])
    completions = ["<think>x</think> 18", "18", "<think>x</think> 7", "18"]
    answers = ["#### 18", "#### 18", "#### 18", "#### ?"]
    assert both(None, completions, answer=answers) == [1.5, 1.0, 0.5, None]
    assert both.__name__ == "gsm8k+format"
    with pytest.raises(ValueError, match="2 reward functions but 1 weights"):
        combine([get_reward("gsm8k"), get_reward("format")], [1.0])


# --- code -----------------------------------------------------------------------------------

@pytest.mark.skipif(sandbox_unavailable() is not None, reason=str(sandbox_unavailable()))
def test_code_reward_fenced_block_and_columns():
    good = "Here:\n```python\ndef f(x):\n    return x\n```\nand a better one\n```python\ndef f(x):\n    return 2 * x\n```"
    bare = "def f(x):\n    return 2 * x\n"
    wrong = "```python\ndef f(x):\n    return x\n```"
    tests = ["assert f(2) == 4", ["assert f(1) == 2", "assert f(3) == 6"], "assert f(2) == 4", []]
    res = get_reward("code").results(None, [good, _conv(bare), wrong, bare], tests=tests)
    assert [r.score for r in res] == [1.0, 1.0, 0.0, None]
    assert [r.status for r in res] == ["pass", "pass", "fail", "no_tests"]


def test_code_reward_without_sandbox_is_none(monkeypatch):
    from align.rewards import sandbox

    monkeypatch.setattr(sandbox, "sandbox_unavailable", lambda: "code sandbox unavailable: no unshare")
    res = get_reward("code").results(None, ["def f(x): return 2*x"], tests=["assert f(2) == 4"])
    assert res[0].score is None and res[0].reason == "code sandbox unavailable: no unshare"


# --- judge ----------------------------------------------------------------------------------

_PREF = {("RESP0", "RESP1"): 0.8, ("RESP0", "RESP2"): 0.6, ("RESP1", "RESP2"): 0.3, ("RESP0", "REF"): 0.9}


def _pref_scorer(prompt: str, options):
    """P(option A better) from the table, by which response the prompt shows first."""
    import math

    shown = sorted((prompt.index(t), t) for t in ("RESP0", "RESP1", "RESP2", "REF") if t in prompt)
    a, b = shown[0][1], shown[1][1]
    p = _PREF[(a, b)] if (a, b) in _PREF else 1.0 - _PREF[(b, a)]
    return {"A": math.log(p), "B": math.log(1.0 - p)}


def _judge(scorer):
    from align.rewards.judge import make_judge_reward
    from constitution import DEFAULT_PATH, load_constitution
    from generator.engines.fake import FakeEngine
    from judge.config import JudgeConfig

    return make_judge_reward(FakeEngine(scorer=scorer), load_constitution(DEFAULT_PATH),
                             JudgeConfig(principles_per_pair=2))


def test_judge_reward_groups():
    reward = _judge(_pref_scorer)
    prompts = ["q1", "q1", "q1", [{"role": "user", "content": "q2"}]]
    completions = ["RESP0", "RESP1", _conv("RESP2"), "RESP0"]
    assert reward(prompts, completions) == [pytest.approx(0.7), pytest.approx(0.25), pytest.approx(0.55), None]
    assert "no other completion" in reward.results(prompts, completions)[3].reason


def test_judge_reward_against_reference_and_unscored_votes():
    assert _judge(_pref_scorer)(["q"], ["RESP0"], reference=["REF"]) == [pytest.approx(0.9)]
    unscored = _judge(lambda prompt, options: {"zzz": -0.1})  # neither option in the top logprobs
    res = unscored.results(["q", "q"], ["RESP0", "RESP1"])
    assert [r.score for r in res] == [None, None] and all(r.reason for r in res)
