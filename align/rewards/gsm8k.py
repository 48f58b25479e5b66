"""GSM8K answer reward (Cobbe et al. arXiv 2110.14168): the completion's final answer compared, as an
exact fraction, with the number after ``####`` in the row's ``answer`` column (GSM8K's gold solution
text, or a bare answer such as ``"18"``). The rules below have rows in the table of
tests/test_answer_parsing.py; the reward scores all 1,000 gold solutions of the shared GSM8K file 1.0
and each of them plus one 0.0 (tests/test_rewards.py::test_gsm8k_scores_every_gold_solution).

A number (``NUMBER``, ``parse_number``):

- sign: ``-`` or ``−`` (U+2212) written directly before the digits, or before a currency sign
  (``-18``, ``−18``, ``-$5``, ``$-5``). A dash followed by a space or a line break is a bullet or a
  dash, not a sign (``"Answer:\\n- 18"`` is 18, ``"#### - 5"`` is 5); a dash right after a letter,
  digit or closing bracket is a minus between terms or a range (``"18-20"`` is 18 then 20).
- digits, optionally in thousands groups: one separator used throughout (comma, ``{,}``, ``\\,``,
  space, no-break or thin space), each group after the first of exactly three digits (``1,234,567``,
  ``$1 000``, ``1{,}000``). Any other comma ends the number: ``"5,6"`` is 5 then 6, ``"12,00"`` is 12
  then 0, ``"1,2345"`` is 1 then 2345, never 56, 1200 or 12345. Leading zeros are kept (``007`` is 7).
- an optional decimal part (``18.00``, ``.5``) and exponent of at most three digits (``1e3`` is 1000).
- a fraction: digits, a slash, digits, no spaces (``7/2``; ``"18 / 2"`` is 18 then 2; a date
  ``12/25/2023`` is 12 only), or ``\\frac{7}{2}`` (also ``\\dfrac``, ``\\tfrac``); a mixed number is a
  whole number, one space (or none before ``\\frac``) and a fraction: ``"3 1/2"``, ``3\\frac{1}{2}``
  are 7/2 (not after ``^`` or ``_``: ``x^2\\frac{1}{2}`` is 2 then 1/2). A zero denominator makes no
  number.
- everything around it is dropped: currency, ``%``, units and words (``"18%"``, ``"18 dollars"`` and
  ``"$18.00"`` are 18); a time ``3:15`` is 3 then 15.

Values are ``fractions.Fraction``: ``"0.5"`` equals ``"1/2"``, ``"#### 7/2"`` matches a gold 3.5, and
``18.5`` does not match 18.

The answer of a text (``final_answer``):

1. A marked answer: ``####`` followed by the answer, with only decoration between (spaces, line
   breaks, ``*``, ``:``, ``=``, ...) or a short label on the marker's line ending in ``:``, ``=`` or
   ``is`` (``"#### Answer: 18"``, ``"#### The answer is 18"``). The answer is the first number of that
   line, so a restatement after it (``"#### 18 / 2 = 9"``, or ``"18 / 2 = 9"`` on the next lines)
   never replaces it. A ``####`` followed by words (a Markdown heading such as ``"#### Step 2: ..."``)
   marks nothing. Of several marked answers holding a number the last wins (the prompt asks for the
   answer on the last line, and a corrected answer comes after the first).
2. Without a marked answer, in the text after the last ``####`` (all of it when there is none): the
   first number of the last ``\\boxed{...}`` (nested braces) that holds one, else the last number.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

from align.rewards.base import RewardResult, per_row

_FRAC = r"\\[dt]?frac\{\d+\}\{\d+\}"
NUMBER = re.compile(rf"""
    (?P<mixed>(?<![\d./^_])\d+                            # 3 1/2, 3\\frac{{1}}{{2}}; not x^2\\frac{{1}}{{2}}
      (?:[ \u00a0]\d+/\d+(?!\d|/\d)|(?:\\,|[ \u00a0])?{_FRAC}))
  | (?P<fraction>(?<![\d./])\d+/\d+(?!\d|/\d)|{_FRAC})    # 7/2 (not in a date), \\frac{{7}}{{2}}
  | (?P<decimal>(?<![\d./])                               # never inside a number, a date or a ratio
      (?:\d{{1,3}}(?P<sep>,|\{{,\}}|\\,|[ \u00a0\u2009\u202f])\d{{3}}(?:(?P=sep)\d{{3}})*(?!\d)|\d+)
      (?:\.\d+)?(?:[eE][-+]?\d{{1,3}}(?!\d))?             # 1,234.5, 18, 1e3
    | (?<![\d./])\.\d+)                                   # .5
    """, re.VERBOSE)
_MINUS = "-\u2212"
_CURRENCY = "$€£¥₹"
_MARKER = "####"
_MARKED = re.compile(r"""(?<!\#)\#\#\#\#(?!\#)
    [^\S\n]*(?:[*_]*[A-Za-z][A-Za-z ]{0,40}?[*_]*(?::|=|\bis\b)[*_]*)?  # a label on the marker's line
    [^A-Za-z0-9\\\-\u2212.$€£¥₹({\[\#]*                                # spaces, line breaks, *, :, =
    (?P<slot>(?![A-Za-z\s])(?:(?!\#\#\#\#)[^\n])+)                       # up to the line's end or a marker""", re.VERBOSE)
_BRACES = re.compile(r"\\(?:boxed|fbox)\s*\{|\{|\}")


@dataclass(frozen=True)
class Number:
    """One number found in a text: its exact value (None for a zero denominator) and its text."""

    value: Fraction | None
    text: str


def _magnitude(m: re.Match) -> Fraction | None:
    try:
        digits = [int(d) for d in re.findall(r"\d+", m.group())]
        if m.group("mixed"):
            return digits[0] + Fraction(digits[1], digits[2])
        if m.group("fraction"):
            return Fraction(digits[0], digits[1])
        return Fraction(re.sub(r"[^\d.eE+-]", "", m.group()))
    except (ValueError, ZeroDivisionError):  # 1/0, or more digits than int() reads
        return None


def numbers(text: str) -> Iterator[Number]:
    """The numbers of ``text`` in order, by the grammar of the module docstring."""
    for m in NUMBER.finditer(text):
        value = _magnitude(m)
        sign = m.start() - 1
        if sign >= 0 and text[sign] in _CURRENCY:  # -$5
            sign -= 1
        before = text[sign - 1] if sign > 0 else " "
        if sign >= 0 and text[sign] in _MINUS and not (before.isalnum() or before in ")]}"):
            yield Number(None if value is None else -value, text[sign:m.end()])
        else:
            yield Number(value, m.group())


def parse_number(text: str) -> Fraction | None:
    """The first number of ``text`` as an exact fraction (``"$1,234.50"`` -> 2469/2), None if none."""
    first = next(numbers(text), None)
    return first.value if first else None


def boxed(text: str) -> list[str]:
    """The contents of every ``\\boxed{...}`` (and ``\\fbox{...}``) in ``text``, braces nested, in
    order of their end; an unclosed box is left out."""
    stack: list[int | None] = []  # for each open brace: where a box's content starts, None if no box
    found: list[str] = []
    for m in _BRACES.finditer(text):
        if m.group() == "}":
            if stack and (start := stack.pop()) is not None:
                found.append(text[start:m.start()])
        else:
            stack.append(m.end() if m.group() != "{" else None)
    return found


def marked_answers(text: str) -> list[str]:
    """What follows each ``####`` that marks an answer (rule 1 of the module docstring): the rest of
    the line from the answer's first character on, in order."""
    return [m.group("slot") for m in _MARKED.finditer(text)]


def _final(text: str) -> Number | None:
    for slot in reversed(marked_answers(text)):
        first = next(numbers(slot), None)
        if first is not None:
            return first
    tail = text.rsplit(_MARKER, 1)[-1]
    for content in reversed(boxed(tail)):
        first = next(numbers(content), None)
        if first is not None:
            return first
    last = deque(numbers(tail), maxlen=1)
    return last[0] if last else None


def final_answer(text: str) -> str | None:
    """The text of the final answer's number (rules of the module docstring), None if there is none."""
    found = _final(text)
    return found.text if found else None


def score_one(completion: str, gold_solution: str) -> RewardResult:
    gold_text = str(gold_solution)
    if _MARKER in gold_text:  # a solution: its marked answer
        found = _final(gold_text)
        gold = found.value if found else None
    else:  # a bare answer such as "18"
        gold = parse_number(gold_text)
    if gold is None:
        return RewardResult(None, "bad_gold", f"no number in the gold answer {gold_text[-80:]!r}")
    answer = _final(completion)
    if answer is None or answer.value is None:
        return RewardResult(0.0, "no_answer", "no number in the completion", raw={"gold": str(gold)})
    ok = answer.value == gold
    return RewardResult(1.0 if ok else 0.0, "correct" if ok else "wrong",
                        f"answer {answer.value} vs gold {gold}", raw={"answer": answer.text, "gold": str(gold)})


gsm8k_reward = per_row(score_one, "answer", "gsm8k")
