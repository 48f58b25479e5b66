"""Answer extraction of the gsm8k and math rewards (align/rewards/gsm8k.py, align/rewards/math_answer.py):
one table row per rule of their docstrings, each with the value a reader expects, then whole rewards
(completion + gold -> 1.0 / 0.0). The tables go through ``final_answer`` / ``parse_number`` /
``score_one`` only, the functions both the first version of these modules and this one have."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest

from align.rewards import gsm8k, math_answer

F = Fraction

# (completion, the value of its final answer; None: no answer)
FINAL_ANSWERS = [
    # a dash is a sign only when attached to the number, and not after a letter, digit or bracket
    ("Answer:\n- 18", 18),
    ("#### - 5", 5),
    ("#### -5", -5),
    ("#### \u22125", -5),                      # Unicode minus
    ("so x = \u221218", -18),
    ("it costs -$5", -5),
    ("it costs $-5", -5),
    ("5 - 3 = 2", 2),
    ("a range of 18-20", 20),                # 20, not -20
    ("#### 18-20", 18),
    # commas (and spaces) join only groups of three digits
    ("#### 5,6", 5),
    ("#### 12,00", 12),
    ("#### 1,2345", 1),
    ("#### 1,234,567", 1234567),
    ("#### $1 000", 1000),
    ("The total is $1 000.", 1000),
    ("#### 1 000 000", 1000000),
    ("#### 1\u202f000", 1000),                 # narrow no-break space
    ("#### 1{,}000", 1000),
    ("#### 1\\,000", 1000),
    ("#### $1,234.50", F(2469, 2)),
    # decimals, exponents, leading zeros, currency, percent, units
    ("#### 18.", 18),
    ("#### $18.00", 18),
    ("#### 0.5", F(1, 2)),
    ("#### .5", F(1, 2)),
    ("#### 1e3", 1000),
    ("#### 007", 7),
    ("#### 18%", 18),
    ("She has 18 dollars left.", 18),
    # fractions and mixed numbers, exact
    ("#### 7/2", F(7, 2)),
    ("#### -7/2", F(-7, 2)),
    ("The answer is 3 1/2", F(7, 2)),
    ("3 1/2 cups", F(7, 2)),
    ("#### -3 1/2", F(-7, 2)),
    ("\\boxed{\\frac{7}{2}}", F(7, 2)),
    ("\\boxed{\\dfrac{7}{2}}", F(7, 2)),
    ("\\boxed{3\\frac{1}{2}}", F(7, 2)),
    ("\\boxed{-\\frac{7}{2}}", F(-7, 2)),
    ("x^2\\frac{1}{2}", F(1, 2)),              # an exponent is not the whole of a mixed number
    ("#### 1/0", None),                      # a zero denominator is no number
    ("#### 12/25/2023", 12),                 # a date is not a fraction
    ("#### 3:15", 3),                        # nor is a time
    # the marked answer: the first number after ####, whatever follows
    ("#### 18", 18),
    ("####18", 18),
    ("#### **18**", 18),
    ("####\n\n42", 42),
    ("#### Answer: $1,800", 1800),
    ("#### The answer is 18", 18),
    ("#### 18 / 2 = 9", 18),
    ("#### 18\n18 / 2 = 9, so she has 9 left", 18),
    ("#### 17\nWait, that is wrong.\n#### 18", 18),          # the last marked answer wins
    ("#### Step 2: multiply\n3 * 6 = 18", 18),               # a heading marks nothing
    ("#### Final Answer\nThe answer is 18.", 18),
    # without a marked answer: the last \boxed{} (nested braces), else the last number
    ("\\boxed{18}", 18),
    ("so \\boxed{18}. Check: 18 / 2 = 9", 18),
    ("\\boxed{\\text{18 apples}} and 4 more", 18),
    ("I have 10 apples.", 10),
    ("no number here", None),
    ("5 apples #### unknown", None),         # nothing after the last ####
]


def _value(text: str) -> Fraction | None:
    return gsm8k.parse_number(gsm8k.final_answer(text) or "")


@pytest.mark.parametrize("text, expected", FINAL_ANSWERS, ids=[repr(t)[:40] for t, _ in FINAL_ANSWERS])
def test_gsm8k_final_answer_value(text, expected):
    assert _value(text) == (None if expected is None else Fraction(expected))


@pytest.mark.parametrize("text, expected", [
    ("5,6", 5), ("12,00", 12), ("1,2345", 1), ("- 5", 5), ("-5", -5), ("x-5", 5), ("18 / 2", 18),
    ("3 1/2", F(7, 2)), ("1 000", 1000), ("3:15", 3), ("18 dollars", 18), ("abc", None), ("", None),
])
def test_parse_number_takes_the_first_number(text, expected):
    assert gsm8k.parse_number(text) == expected


# (completion, gold column, reward)
GSM8K_REWARDS = [
    ("Answer:\n- 18", "#### 18", 1.0),
    ("Answer:\n- 18", "#### -18", 0.0),
    ("#### 5,6", "#### 56", 0.0),
    ("#### $1 000", "Each costs $500, so 2 cost $1000.\n#### 1000", 1.0),
    ("so \\boxed{18}. Check: 18 / 2 = 9", "#### 18", 1.0),
    ("The answer is 3 1/2", "#### 3.5", 1.0),
    ("#### 7/2", "#### 3.5", 1.0),
    ("#### 18\n18 / 2 = 9", "#### 18", 1.0),
    ("#### 18 / 2 = 9", "#### 9", 0.0),
    ("#### - 5", "#### 5", 1.0),
    ("#### 1,2345", "#### 12345", 0.0),
    ("#### 0.5", "1/2", 1.0),                # a bare gold answer
    ("#### 3 1/2", "7/2", 1.0),
]


@pytest.mark.parametrize("completion, gold, score", GSM8K_REWARDS)
def test_gsm8k_reward_end_to_end(completion, gold, score):
    assert gsm8k.score_one(completion, gold).score == score


def test_gsm8k_zero_denominator_is_no_answer_and_a_gold_without_marked_number_is_none():
    res = gsm8k.score_one("#### 1/0", "#### 0")
    assert (res.score, res.status) == (0.0, "no_answer")
    assert gsm8k.score_one("18", "I had 5 apples.\n#### unknown").score is None


# (completion, gold column, reward)
MATH_REWARDS = [
    ("Answer:\n- 18", "18", 1.0),
    ("\u221218", "-18", 1.0),                       # Unicode minus
    ("The answer is 3 1/2", "\\frac{7}{2}", 1.0),   # mixed numbers, exact
    ("$3 1/2$", "3.5", 1.0),
    ("so it is 3\\frac{1}{2}", "\\frac{7}{2}", 1.0),
    ("\\boxed{3\\frac{1}{2}}", "3.5", 1.0),
    ("3 1/2 cups", "3", 0.0),
    ("$1 000$", "1000", 1.0),                       # grouped by spaces in LaTeX
    ("$1\\,000$", "1000", 1.0),
    ("The answer is 1,2345", "1234", 0.0),          # no digit dropped
    ("5,6", "56", 0.0),
    ("12,00", "1200", 0.0),
    ("#### 18\n18 / 2 = 9, so she has 9", "18", 1.0),   # the marked line, not a later restatement
    ("The final answer is 5, no wait: \\boxed{18}", "18", 1.0),  # the last box first
    ("$\\boxed{2}$ and then $\\boxed{3}$", "3", 1.0),
    ("\\boxed{18.}", "18", 1.0),                    # a box math-verify cannot read: its number
    ("\\boxed{-\\frac{7}{2}}", "-3.5", 1.0),
    ("$0.5$", "\\frac{1}{2}", 1.0),
    ("$x^2\\frac{1}{2}$", "\\frac{x^2}{2}", 1.0),   # not rewritten as a mixed number
]


@pytest.mark.parametrize("completion, gold, score", MATH_REWARDS)
def test_math_reward_end_to_end(completion, gold, score):
    res = math_answer.score_one(completion, gold)
    assert res.score == score, res


def test_gsm8k_hostile_long_completion_is_linear():
    """Unclosed boxes, markers and digit runs in a 600,000-character completion: scored in seconds
    (a scan from each box or marker to the end of the text would take hours)."""
    text = "\\boxed{" * 30000 + "#### *" * 30000 + "1,000 1 " * 30000 + "#### 18"
    start = time.perf_counter()
    assert gsm8k.score_one(text, "#### 18").score == 1.0
    assert time.perf_counter() - start < 20


def test_gsm8k_number_longer_than_int_reads_is_no_answer():
    """Python reads at most 4,300 digits into an int (sys.get_int_max_str_digits); a longer number is
    no number, not a crash of the reward."""
    res = gsm8k.score_one("#### " + "9" * 10000, "#### 18")
    assert (res.score, res.status) == (0.0, "no_answer")
