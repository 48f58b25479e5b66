"""GSM8K answer reward (Cobbe et al. arXiv 2110.14168): the completion's final answer, the number
after ``####`` or else the last number in the text, compared numerically with the number after
``####`` in the row's ``answer`` column (GSM8K's gold solution text).

Normalisation: thousands commas, ``$``, ``%``, a trailing ``.0`` and words after the number
("18 dollars") are dropped; numbers compare as exact fractions, so ``18``, ``18.0`` and ``$18`` agree, and
``1,800`` equals ``1800``. Tested on all 1,000 gold solutions of the shared GSM8K file
(tests/test_rewards.py::test_gsm8k_scores_every_gold_solution).
"""

from __future__ import annotations

import re
from fractions import Fraction

from align.rewards.base import RewardResult, per_row

_NUMBER = re.compile(r"-?\$?\s*\d[\d,]*(?:\.\d+)?|-?\$?\s*\.\d+")
_MARKER = "####"


def parse_number(text: str) -> Fraction | None:
    """The number in ``text`` as an exact fraction (``"$1,234.50"`` -> 2469/2), None if none."""
    m = _NUMBER.search(text)
    if not m:
        return None
    token = m.group(0).replace("$", "").replace(",", "").replace(" ", "")
    try:
        return Fraction(token)
    except (ValueError, ZeroDivisionError):
        return None


def final_answer(text: str) -> str | None:
    """The answer part of a solution: after the last ``####``, else the last number in the text."""
    if _MARKER in text:
        tail = text.rsplit(_MARKER, 1)[1].strip()
        m = _NUMBER.search(tail)
        return m.group(0) if m else None
    found = _NUMBER.findall(text)
    return found[-1] if found else None


def score_one(completion: str, gold_solution: str) -> RewardResult:
    gold_text = final_answer(gold_solution) if _MARKER in str(gold_solution) else str(gold_solution)
    gold = parse_number(gold_text or "")
    if gold is None:
        return RewardResult(None, "bad_gold", f"no number in the gold answer {str(gold_solution)[-80:]!r}")
    answer = final_answer(completion)
    if answer is None:
        return RewardResult(0.0, "no_answer", "no number in the completion", raw={"gold": str(gold)})
    got = parse_number(answer)
    ok = got == gold
    return RewardResult(1.0 if ok else 0.0, "correct" if ok else "wrong",
                        f"answer {got} vs gold {gold}", raw={"answer": answer, "gold": str(gold)})


gsm8k_reward = per_row(score_one, "answer", "gsm8k")
