"""Completions the answer grammar of align/rewards/gsm8k.py misreads (and, where it shares the
grammar, align/rewards/math_answer.py): each case is text a policy writes during GRPO, with the
value a reader takes from it. Companion to the rule table of tests/test_answer_parsing.py."""

from __future__ import annotations

from fractions import Fraction

import pytest

from align.rewards import gsm8k, math_answer

F = Fraction
BODY = "\nShe buys 3 bags of 6 apples: 3 * 6 = 18 apples.\n"


def _value(text: str) -> Fraction | None:
    return gsm8k.parse_number(gsm8k.final_answer(text) or "")


# A Markdown heading in emphasis, brackets or after a symbol is still a heading ("a #### followed by
# words marks nothing", gsm8k.py rule 1); read as a marked answer, its step number overrides the
# real answer, \boxed{} included (got 1, 2, ...; expected 18).
HEADINGS = ["#### **Step 1: Find the total**", "#### **Step 1:** Find the total", "#### *Step 1*",
            "#### _Step 1_", "#### [Step 1] Find the total", "#### \u2014 Step 1", "#### \U0001f4cc Step 1",
            "#### \u00c9tape 1 : total"]


@pytest.mark.parametrize("heading", HEADINGS)
@pytest.mark.parametrize("ending", ["\\boxed{18}", "The answer is 18."])
def test_gsm8k_emphasised_heading_marks_no_answer(heading, ending):
    text = heading + BODY + ending
    assert _value(text) == 18
    assert gsm8k.score_one(text, "#### 18").score == 1.0


def test_gsm8k_heading_after_the_marked_answer_does_not_replace_it():
    text = "#### 18\n\n#### **Check (step 2)**\n3 * 6 = 18, correct."
    assert _value(text) == 18  # got 2


def test_math_emphasised_heading_marks_no_answer():
    """math_answer.py rule 2 takes the last line marked by gsm8k.marked_answers: the heading's 2."""
    res = math_answer.score_one("#### **Step 2: Find the total**" + BODY + "Final answer: 18", "18")
    assert res.score == 1.0, res


# ``1,\!000`` is LaTeX's thousands group (the MATH dataset's own answers are written so): read as
# 1 in a box and as 000 outside one, so a gold 1 or 0 is credited and a gold 1000 is not.
@pytest.mark.parametrize("text", ["\\boxed{1,\\!000}", "\\boxed{\\$1,\\!000}", "The total is $1,\\!000$."])
def test_gsm8k_latex_thousands_group(text):
    assert _value(text) == 1000
    assert gsm8k.score_one(text, "#### 1000").score == 1.0


# ``\frac12`` and ``\frac72`` (one-digit arguments without braces) are 1/2 and 7/2 in LaTeX; the
# grammar reads 12 and 72, so a gold 12 or 72 is credited.
@pytest.mark.parametrize("text, expected", [("\\boxed{\\frac12}", F(1, 2)), ("\\boxed{\\frac72}", F(7, 2)),
                                            ("\\boxed{3\\tfrac12}", F(7, 2))])
def test_gsm8k_braceless_latex_fraction(text, expected):
    assert _value(text) == expected


# Unicode digits are numbers to the grammar (``\d``; "The answer is １８" is 18), but after ``####`` the
# marker's decoration swallows all but the last one: "#### １８" is 8, and a gold 8 is credited.
@pytest.mark.parametrize("digits", ["\uff11\uff18", "\u0661\u0668", "\U0001d7cf\U0001d7d6"])
def test_gsm8k_marked_unicode_digits_read_whole(digits):
    assert _value(f"#### {digits}") == _value(f"The answer is {digits}")
    assert gsm8k.score_one(f"#### {digits}", "#### 8").score == 0.0


# An exponent of four or more digits is dropped and its mantissa kept: "1e1000" is read as 1.
@pytest.mark.parametrize("completion, gold", [("#### 1e1000", "#### 1"), ("#### 2e-5000", "#### 2")])
def test_gsm8k_long_exponent_is_not_its_mantissa(completion, gold):
    assert gsm8k.score_one(completion, gold).score == 0.0
