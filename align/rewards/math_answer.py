"""Math answer reward with math-verify (Hugging Face ``math_verify``; the verifier of Open-R1 and
TRL's ``accuracy_reward``): the gold ``answer`` column and the completion are parsed (LaTeX,
``\\boxed{}``, fractions, sets, equations such as ``x=3``) and compared symbolically, so
``\\frac{1}{2}`` and ``0.5`` agree and ``0.51`` does not
(tests/test_rewards.py::test_math_equivalent_forms). A gold answer math-verify cannot parse
gives ``None`` with the reason, never 0. A gold answer written as bare LaTeX (no ``$``) is read as
inline math when math-verify finds nothing in it as text.
"""

from __future__ import annotations

from align.rewards.base import RewardResult, per_row


def _math(parsed: list) -> list:
    """math-verify's parse result if it holds a mathematical object, else [] (a bare string is
    only the extracted text, nothing to compare)."""
    return parsed if any(not isinstance(p, str) for p in parsed) else []


def score_one(completion: str, gold_answer: str) -> RewardResult:
    from math_verify import parse, verify

    gold = _math(parse(str(gold_answer)))
    if not gold and "$" not in str(gold_answer):  # bare LaTeX such as "\\sqrt{2}": read it as math
        gold = _math(parse(f"${gold_answer}$"))
    if not gold:
        return RewardResult(None, "bad_gold", f"math-verify cannot parse the gold answer {str(gold_answer)[:80]!r}")
    answer = parse(completion)
    if not answer:
        return RewardResult(0.0, "no_answer", "no parseable answer in the completion", raw={"gold": str(gold[-1])})
    ok = bool(verify(gold, answer))
    return RewardResult(1.0 if ok else 0.0, "correct" if ok else "wrong",
                        f"answer {answer[-1]} vs gold {gold[-1]}", raw={"answer": str(answer[-1]), "gold": str(gold[-1])})


math_reward = per_row(score_one, "answer", "math")
