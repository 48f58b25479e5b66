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
- digits, of any script (``１８``, ``١٨`` and ``𝟏𝟖`` are 18; Unicode decimal digits, read by
  ``unicodedata.decimal``), optionally in thousands groups: one separator used throughout (comma,
  LaTeX's ``,\\!``, ``{,}``, ``\\,``, space, no-break or thin space), each group after the first of
  exactly three digits (``1,234,567``, ``1,\\!000``, ``$1 000``, ``1{,}000``). Any other comma ends
  the number: ``"5,6"`` is 5 then 6, ``"12,00"`` is 12 then 0, ``"1,2345"`` is 1 then 2345, never 56,
  1200 or 12345. Leading zeros are kept (``007`` is 7).
- an optional decimal part (``18.00``, ``.5``) and exponent (``1e3`` is 1000). An exponent beyond
  ±999 makes no number (``"#### 1e1000"`` has no answer): no GSM8K answer is that large or small,
  the mantissa alone (1) would be a wrong reading, and the exact value would be an integer of
  thousands of digits built from a few characters of a completion.
- a fraction: digits, a slash, digits, no spaces (``7/2``; ``"18 / 2"`` is 18 then 2; a date
  ``12/25/2023`` is 12 only), or ``\\frac{7}{2}`` (also ``\\dfrac``, ``\\tfrac``; an argument of
  one digit needs no braces, as in LaTeX: ``\\frac72`` is 7/2, never 72); a mixed number is a whole
  number, one space (or none before ``\\frac``) and a fraction: ``"3 1/2"``, ``3\\frac{1}{2}``,
  ``3\\tfrac12`` are 7/2 (not after ``^`` or ``_``: ``x^2\\frac{1}{2}`` is 2 then 1/2). A zero
  denominator makes no number.
- everything around it is dropped: currency, ``%``, units and words (``"18%"``, ``"18 dollars"`` and
  ``"$18.00"`` are 18); a time ``3:15`` is 3 then 15.

Values are ``fractions.Fraction``: ``"0.5"`` equals ``"1/2"``, ``"#### 7/2"`` matches a gold 3.5, and
``18.5`` does not match 18.

The answer of a text (``final_answer``):

1. A marked answer: ``####``, then on the marker's line an optional short label (letters and
   spaces ending in ``:``, ``=`` or ``is``, emphasis around it allowed: ``"#### Answer: 18"``,
   ``"#### **Answer:** 18"``, ``"#### The answer is 18"``), then decoration (spaces, line breaks,
   ``*``, ``_``, a backtick, ``:``, ``=``, a bullet dash or ``•`` followed by a space), then the
   answer, which must start as a number does: up to three openers (``$``, ``\\(``, ``\\boxed{``, a
   bracket), a sign, a currency sign, then a digit, ``.5`` or ``\\frac``. Anything else after
   ``####`` makes a Markdown heading, which marks nothing: words, emphasised or bracketed words,
   symbols and letters of any script (``"#### Step 2: ..."``, ``"#### **Step 1: ...**"``,
   ``"#### [Step 1] ..."``, ``"#### — Step 1"``, ``"#### Étape 1"``). So is a numbered heading: a
   section number (``1.``, ``1.2.``, ``2)``, ``(3)``, ``[4]``), a space, then a capitalised word or
   "step" (``"#### 1. Find the total"``, ``"#### 2) step two"``; ``"#### 1. find it"`` is an
   answer 1, and ``"#### 18. So ..."`` a heading, which rule 2 then reads). The answer is the
   first number of the marked line, so a restatement after it (``"#### 18 / 2 = 9"``, or
   ``"18 / 2 = 9"`` on the next lines) never replaces it. Of several marked answers holding a
   number the last wins (the prompt asks for the answer on the last line, and a corrected answer
   comes after the first); a heading after the answer replaces nothing.
2. Without a marked answer, in the text after the last ``####`` (all of it when there is none): the
   first number of the last ``\\boxed{...}`` (nested braces) that holds one, else the last number.

A marked answer wins over a box wherever each stands (``"\\boxed{18}\\n#### 20"`` is 20): ``####``
is GSM8K's own answer line, the form of every gold solution and the one the prompt asks for
(prompts/tasks/final_answer.jinja), so a completion that writes it has said which number it means;
a box is read only when no line is marked. align/rewards/math_answer.py reads the other way round,
for the datasets that ask for a box.
"""

from __future__ import annotations

import re
import unicodedata
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

from align.rewards.base import RewardResult, per_row

_ARG = r"(?:\{\d+\}|\d)"  # a \frac argument: digits in braces, or one digit (\frac72 is 7/2)
_FRAC = rf"\\[dt]?frac\s*{_ARG}\s*{_ARG}"
NUMBER = re.compile(rf"""
    (?P<mixed>(?<![\d./^_])\d+                            # 3 1/2, 3\\frac{{1}}{{2}}; not x^2\\frac{{1}}{{2}}
      (?:[ \u00a0]\d+/\d+(?!\d|/\d)|(?:\\,|[ \u00a0])?{_FRAC}))
  | (?P<fraction>(?<![\d./])\d+/\d+(?!\d|/\d)|{_FRAC})    # 7/2 (not in a date), \\frac{{7}}{{2}}
  | (?P<decimal>(?<![\d./])                               # never inside a number, a date or a ratio
      (?:\d{{1,3}}(?P<sep>,(?:\\!)?|\{{,\}}|\\,|[ \u00a0\u2009\u202f])\d{{3}}(?:(?P=sep)\d{{3}})*(?!\d)|\d+)
      (?:\.\d+)?(?:[eE][-+]?\d+)?                         # 1,234.5, 1,\\!000, 18, 1e3
    | (?<![\d./])\.\d+)                                   # .5
    """, re.VERBOSE)
_FRAC_ARGS = re.compile(r"\\[dt]?frac\s*(?:\{(\d+)\}|(\d))\s*(?:\{(\d+)\}|(\d))")
_EXPONENT = re.compile(r"[eE]([-+]?\d+)$")
_MAX_EXPONENT = 999
_NON_ASCII_DIGIT = re.compile(r"(?![0-9])\d")
_MINUS = "-\u2212"
_CURRENCY = "$€£¥₹"
_MARKER = "####"
_MARKED = re.compile(r"""(?<!\#)\#\#\#\#(?!\#)
    (?:[^\S\n]*[*_]*[A-Za-z][A-Za-z ]{0,40}?[*_]*(?::|=|\bis\b)[*_]*)?  # a label on the marker's line
    (?:[\s*_:=`]|[-\u2212\u2013\u2014\u2022](?=[^\S\n]))*+              # decoration, a bullet
    (?P<slot>(?=(?:\$|\\[(\[]|\\(?:boxed|fbox)\{|[(\[{]){0,3}          # $, \(, \boxed{, a bracket
                [-+\u2212]?(?:(?:[$€£¥₹]|\\\$)[^\S\n]?)?[-\u2212]?        # a sign, a currency sign
                (?:\d|\.\d|\\[dt]?frac))                                 # then the number itself
      (?:(?!\#\#\#\#)[^\n])+)                                          # to the line's end or a marker
    """, re.VERBOSE)
_NUMBERED_HEADING = re.compile(r"(?:\(\d+\)|\[\d+\]|\d+(?:\.\d+)*[.)])[^\S\n]+[*_]*(?P<word>[^\W\d_]+)")
_BRACES = re.compile(r"\\(?:boxed|fbox)\s*\{|\{|\}")


@dataclass(frozen=True)
class Number:
    """One number found in a text: its exact value (None for a zero denominator or an exponent beyond
    ``_MAX_EXPONENT``) and its text."""

    value: Fraction | None
    text: str


def ascii_digits(text: str) -> str:
    """``text`` with every decimal digit of another script written as its ASCII digit (``１８``,
    ``١٨`` and ``𝟏𝟖`` become ``18``; Unicode category Nd, by ``unicodedata.decimal``)."""
    return _NON_ASCII_DIGIT.sub(lambda d: str(unicodedata.decimal(d.group())), text)


def _fraction(text: str) -> Fraction:
    """The value of a fraction or mixed number: ``7/2``, ``3 1/2``, ``\\frac{7}{2}``, ``3\\tfrac12``."""
    latex = _FRAC_ARGS.search(text)
    if latex:
        whole = re.findall(r"\d+", text[:latex.start()])
        num, den = latex[1] or latex[2], latex[3] or latex[4]
    else:
        *whole, num, den = re.findall(r"\d+", text)
    return int(whole[0] if whole else 0) + Fraction(int(num), int(den))


def _magnitude(m: re.Match) -> Fraction | None:
    text = ascii_digits(m.group())
    try:
        if m.group("mixed") or m.group("fraction"):
            return _fraction(text)
        decimal = re.sub(r"[^\d.eE+-]", "", text)
        exponent = _EXPONENT.search(decimal)
        if exponent and abs(int(exponent[1])) > _MAX_EXPONENT:  # 1e1000: no number, not 1
            return None
        return Fraction(decimal)
    except (ValueError, ZeroDivisionError):  # 1/0, or more digits than int() reads
        return None


def _number(text: str, m: re.Match) -> Number:
    """The number of match ``m`` of ``NUMBER`` in ``text``, with the sign written before it."""
    value = _magnitude(m)
    sign = m.start() - 1
    if sign >= 0 and text[sign] in _CURRENCY:  # -$5
        sign -= 1
    before = text[sign - 1] if sign > 0 else " "
    if sign >= 0 and text[sign] in _MINUS and not (before.isalnum() or before in ")]}"):
        return Number(None if value is None else -value, text[sign:m.end()])
    return Number(value, m.group())


def numbers(text: str) -> Iterator[Number]:
    """The numbers of ``text`` in order, by the grammar of the module docstring."""
    return (_number(text, m) for m in NUMBER.finditer(text))


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
    the line from the answer's first character on, in order; a numbered heading is left out."""
    return [m.group("slot") for m in _MARKED.finditer(text) if not _numbered_heading(m.group("slot"))]


def _numbered_heading(slot: str) -> bool:
    """Whether a marked line is a numbered Markdown heading (``1. Find the total``, ``2) step two``)."""
    heading = _NUMBERED_HEADING.match(slot)
    return bool(heading) and (heading["word"][0].isupper() or heading["word"].lower() == "step")


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
    last = deque(NUMBER.finditer(tail), maxlen=1)  # only the last number's value is computed
    return _number(tail, last[0]) if last else None


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
