"""Math answer reward with math-verify (Hugging Face ``math_verify``; the verifier of Open-R1 and
TRL's ``accuracy_reward``): the gold ``answer`` column and the completion's answer are parsed (LaTeX,
``\\boxed{}``, fractions, sets, equations such as ``x=3``) and compared symbolically, so
``\\frac{1}{2}`` and ``0.5`` agree and ``0.51`` does not
(tests/test_rewards.py::test_math_equivalent_forms). A gold answer math-verify cannot parse
gives ``None`` with the reason, never 0. A gold answer written as bare LaTeX (no ``$``) is read as
inline math when math-verify finds nothing in it as text.

Which part of the completion is the answer:

1. the last ``\\boxed{...}`` (braces nested), parsed alone; when math-verify finds nothing in it,
   its first number by the grammar of align/rewards/gsm8k.py (``\\boxed{18.}`` and
   ``\\boxed{18 cups.}`` are 18);
2. else the last line marked by ``####`` (rule 1 of align/rewards/gsm8k.py), parsed alone, so a
   restatement on the lines after it (``"#### 18\\n18 / 2 = 9"``) does not replace it (one on the
   same line is math-verify's choice);
3. else math-verify's choice over the whole completion (its answer anchors, then the last match).

A box wins over a ``####`` line wherever each stands (``"\\boxed{18}\\n#### 20"`` is 18, where the
gsm8k reward reads 20): the solutions of MATH (Hendrycks et al. arXiv 2103.03874), which this reward
is for, put their answers in ``\\boxed{}``, and TRL's ``accuracy_reward`` tries a box first
(``boxed_match_priority=0``); ``####`` is GSM8K's marker, read here only for a completion that boxes
nothing. A ``####`` heading (``"#### **Step 2: ...**"``, ``"#### 1. Find the total"``) marks
nothing, as in align/rewards/gsm8k.py.

Before math-verify reads a gold answer or a completion, ``normalise`` rewrites what math-verify 0.9
misreads (cases of tests/test_answer_parsing.py and tests/test_answer_markers.py): digits of other scripts become ASCII digits
(math-verify finds nothing in ``１８``, ``١٨`` or ``𝟏𝟖``); the Unicode minus ``−`` becomes ``-``; a mixed
number (``3 1/2``, ``3\\frac{1}{2}``) becomes ``\\frac{7}{2}`` (math-verify reads ``3 1/2`` as 1, or 2
in ``$...$``); a number grouped by spaces (``1 000``, ``1\\,000``) loses its spaces (in ``$...$``
math-verify reads it as 1*000 = 0); and a space or comma between digits that precedes four or more
digits gets a space after it (``1,2345`` is then two numbers, not math-verify's 1234). Commas are
otherwise math-verify's: a thousands separator before three digits in text (``1,000``), a decimal
comma before other digit counts in text (``5,6`` is 5.6 and ``12,00`` is 12, never 56 or 1200), and
a list separator in LaTeX (``$[1,100]$`` is an interval).
"""

from __future__ import annotations

import re

from align.rewards.base import RewardResult, per_row
from align.rewards.gsm8k import NUMBER, ascii_digits, boxed, marked_answers, parse_number

_SPACE_GROUP = " \u00a0\u2009\u202f\\,"
_BROKEN_GROUP = re.compile(r"(?<=\d)([ ,])(?=\d{4})")


def normalise(text: str) -> str:
    """``text`` with what math-verify misreads rewritten (module docstring)."""
    text = _BROKEN_GROUP.sub(r"\1 ", ascii_digits(text).replace("\u2212", "-"))
    out, done = [], 0
    for m in NUMBER.finditer(text):
        if m.group("mixed"):
            value = parse_number(m.group())
            if value is None:  # a zero denominator: left as written
                continue
            new = rf"\frac{{{value.numerator}}}{{{value.denominator}}}"
        elif m.group("sep") and m.group("sep") in _SPACE_GROUP:
            new = re.sub(r"[^\d.eE+-]", "", m.group())
        else:
            continue
        out += [text[done:m.start()], new]
        done = m.end()
    return "".join(out) + text[done:]


def _math(parsed: list) -> list:
    """math-verify's parse result if it holds a mathematical object, else [] (a bare string is
    only the extracted text, nothing to compare)."""
    return parsed if any(not isinstance(p, str) for p in parsed) else []


def _answer(completion: str) -> list:
    """The completion's answer as math-verify's parse result (module docstring), [] if none."""
    from math_verify import parse
    from sympy import Rational

    text = normalise(completion)
    boxes = boxed(text)
    if boxes:
        found = _math(parse(f"\\boxed{{{boxes[-1]}}}"))
        if not found and (value := parse_number(boxes[-1])) is not None:
            found = [Rational(value.numerator, value.denominator)]
        return found
    marked = marked_answers(text)
    if marked and (found := _math(parse(marked[-1]))):
        return found
    return _math(parse(text))


def score_one(completion: str, gold_answer: str) -> RewardResult:
    from math_verify import parse, verify

    gold_text = normalise(str(gold_answer))
    gold = _math(parse(gold_text))
    if not gold and "$" not in gold_text:  # bare LaTeX such as "\\sqrt{2}": read it as math
        gold = _math(parse(f"${gold_text}$"))
    if not gold:
        return RewardResult(None, "bad_gold", f"math-verify cannot parse the gold answer {str(gold_answer)[:80]!r}")
    answer = _answer(completion)
    if not answer:
        return RewardResult(0.0, "no_answer", "no parseable answer in the completion", raw={"gold": str(gold[-1])})
    ok = bool(verify(gold, answer))
    return RewardResult(1.0 if ok else 0.0, "correct" if ok else "wrong",
                        f"answer {answer[-1]} vs gold {gold[-1]}", raw={"answer": str(answer[-1]), "gold": str(gold[-1])})


math_reward = per_row(score_one, "answer", "math")
