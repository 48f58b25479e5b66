"""What a ``####`` marks and which marker wins (align/rewards/gsm8k.py rule 1 and the paragraph after
its rules; align/rewards/math_answer.py's order of box and marker), with the number forms added to
the grammar next to it: LaTeX thousands groups, braceless ``\\frac`` arguments, digits of other
scripts and exponents. Companion to tests/test_answer_parsing.py and
tests/test_answer_parsing_review.py."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest

from align.rewards import gsm8k, math_answer

F = Fraction
BODY = "\nShe buys 3 bags of 6 apples: 3 * 6 = 18 apples.\n"


def _value(text: str) -> Fraction | None:
    return gsm8k.parse_number(gsm8k.final_answer(text) or "")


# A numbered heading (section number, a space, a capitalised word or "step") marks nothing, so its
# number never overrides the box or the last number (got 1, 2, ...).
NUMBERED_HEADINGS = ["#### 1. Find the total", "#### 2) step two", "#### (3) Find the total",
                     "#### [4] Find the total", "#### 1.2. Compute", "#### 1. **Find the total**"]


@pytest.mark.parametrize("heading", NUMBERED_HEADINGS)
@pytest.mark.parametrize("ending", ["\\boxed{18}", "The answer is 18."])
def test_numbered_heading_marks_no_answer(heading, ending):
    assert _value(heading + BODY + ending) == 18
    assert math_answer.score_one(heading + BODY + ending, "18").score == 1.0


# What may follow ####: a label, decoration and openers, then the number (gsm8k.py rule 1).
MARKED = [
    ("#### 1. find it" + BODY + "\\boxed{18}", 1),      # a lower-case word after "1.": an answer
    ("#### 18.\n\\boxed{5}", 18),
    ("#### $ 18", 18),
    ("#### +18", 18),
    ("#### \\boxed{18}", 18),
    ("#### $\\boxed{18}$", 18),
    ("#### \\(18\\)", 18),
    ("#### `18`", 18),
    ("#### **Answer:** 18", 18),
    ("#### The answer is: $18", 18),
    ("#### \u2022 5", 5),                                # a bullet
    ("#### \\frac{7}{2}", F(7, 2)),
    ("#### 18\n#### 2) Check the total\n3 * 6 = 18", 18),  # a numbered heading replaces nothing
]


@pytest.mark.parametrize("text, expected", MARKED, ids=[repr(t)[:40] for t, _ in MARKED])
def test_marked_answer_after_label_and_decoration(text, expected):
    assert _value(text) == expected


def test_marked_answer_wins_in_gsm8k_and_box_in_math():
    """The order of the two markers is each reward's own (their module docstrings)."""
    for text in ["\\boxed{18}\n#### 20", "#### 20\n\\boxed{18}"]:
        assert _value(text) == 20
        assert gsm8k.score_one(text, "#### 20").score == 1.0
        assert math_answer.score_one(text, "18").score == 1.0
        assert math_answer.score_one(text, "20").score == 0.0


NUMBERS = [
    ("1,\\!000,\\!000", 1000000),
    ("\\frac 7 2", F(7, 2)),
    ("\\frac{7}2", F(7, 2)),
    ("\\dfrac7{2}", F(7, 2)),
    ("\\frac{12}5", F(12, 5)),
    ("3\\frac12", F(7, 2)),
    ("\uff11\uff18", 18),                      # full-width
    ("\u0661\u0668", 18),                      # Arabic-Indic
    ("\U0001d7cf\U0001d7d6", 18),              # mathematical bold
    ("2.5e-3", F(1, 400)),
    ("1e999", 10 ** 999),                      # the largest exponent read
    ("1e-999", F(1, 10 ** 999)),
]


@pytest.mark.parametrize("text, expected", NUMBERS, ids=[repr(t)[:30] for t, _ in NUMBERS])
def test_number_forms(text, expected):
    assert gsm8k.parse_number(text) == expected
    assert _value(f"#### {text}") == expected


@pytest.mark.parametrize("completion", ["#### 1e1000", "#### 2e-5000", "#### 1e" + "9" * 5000])
def test_exponent_beyond_999_is_no_answer(completion):
    res = gsm8k.score_one(completion, "#### 1")
    assert (res.score, res.status) == (0.0, "no_answer")


@pytest.mark.parametrize("digits", ["\uff11\uff18", "\u0661\u0668", "\U0001d7cf\U0001d7d6"])
@pytest.mark.parametrize("form", ["#### {}", "The answer is {}", "${}$", "\\boxed{{{}}}"])
def test_math_reads_digits_of_other_scripts(digits, form):
    """math-verify 0.9 finds nothing in them; ``normalise`` writes them as ASCII digits."""
    completion = form.format(digits)
    assert math_answer.score_one(completion, "18").score == 1.0
    assert math_answer.score_one(completion, "8").score == 0.0


HOSTILE = {
    "spaces after a marker": "####" + " " * 100_000 + "x",
    "line breaks after a marker": "####" + "\n" * 100_000 + "x",
    "emphasis after a marker": "#### " + "*" * 100_000 + "Step",
    "bullets after a marker": "#### " + "- " * 50_000 + "x",
    "openers after a marker": "#### " + "(" * 100_000,
    "numbered headings": "#### 1. Find " * 8_000,
    "labels": "#### Answer " * 8_000,
    "spaces after \\frac": "\\frac" + " " * 100_000 + "x",
    "a long exponent": "1e" + "9" * 100_000,
    "LaTeX groups": "1,\\!000 " * 12_000,
    "full-width digits": "\uff11\uff18 " * 30_000,
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_100kb_completion_is_linear(name):
    """About 100,000 characters each, built to make a backtracking pattern retry from every position:
    read in well under a second on an idle box (a quadratic scan would take hours)."""
    start = time.perf_counter()
    gsm8k.score_one(HOSTILE[name], "#### 18")
    assert time.perf_counter() - start < 10
