"""Schema of preference runs (``rlaif judge`` output) (the record schemas listed in the README).

TRL's conversational explicit-prompt preference format: ``prompt`` is the conversation up
to the judged turn, ``chosen``/``rejected`` are one-message assistant lists, so
``DPOTrainer`` and ``RewardTrainer`` read the rows unchanged.

A vote is one (principle, order) judgement: ``order`` is ``"ab"`` when the pair's first
response was shown as option (A), ``"ba"`` when swapped; ``p_a`` is the judge's probability
that option (A) is better as shown, or ``None`` (with ``reason``) when it could not be scored.
With ``--calibrate batch`` ``p_a`` is the calibrated probability and ``p_a_raw`` the one read
(judge/calibration.py); without, ``p_a_raw`` is null.
"""

from __future__ import annotations

from datasets import Features, List, Value

from generator.records import MESSAGES

VOTE = {
    "principle_id": Value("string"),
    "order": Value("string"),
    "p_a": Value("float64"),
    "reason": Value("string"),
    "p_a_raw": Value("float64"),  # the probability read, when p_a is batch-calibrated (else null)
}

PREFERENCES = Features({
    "id": Value("string"),
    "prompt": MESSAGES,
    "chosen": MESSAGES,
    "rejected": MESSAGES,
    "p_chosen": Value("float64"),
    "votes": List(VOTE),
    "principle_ids": List(Value("string")),
    "position_consistent": Value("bool"),
    "judge_model": Value("string"),
    "constitution_sha256": Value("string"),
    "template_sha256": Value("string"),
})
