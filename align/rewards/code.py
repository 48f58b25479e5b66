"""Code reward: the completion's program (its last fenced ```python block, else the whole text)
runs against the row's ``tests`` column (Python asserts: a string or a list of strings) in the
sandbox of align/rewards/sandbox.py. 1.0 for pass, 0.0 for fail / timeout / error / violation,
None when the sandbox itself could not run (the reason says why). Programs of one call run in
parallel up to the CPU count (``sandbox.run_many``)."""

from __future__ import annotations

import re

from align.rewards.base import RewardResult, column, completion_text, scores
from align.rewards.sandbox import Limits, RunResult, run_many

_FENCE = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_program(text: str) -> str:
    """The last fenced python block, else the whole text."""
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else text


def _tests(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(t, str) for t in value):
        return list(value)
    raise TypeError(f"code reward: 'tests' must be a string or a list of strings, got {type(value).__name__}")


def to_result(run: RunResult) -> RewardResult:
    score = None if run.status == "sandbox_error" else (1.0 if run.status == "pass" else 0.0)
    return RewardResult(score, run.status, run.reason, raw=run)


def results(prompts, completions, *, limits: Limits = Limits(), **columns) -> list[RewardResult]:
    tests = [_tests(t) for t in column(columns, "tests", len(completions), "code")]
    jobs = [(extract_program(completion_text(c)), t) for c, t in zip(completions, tests, strict=True) if t]
    runs = iter(run_many(jobs, limits))
    # A row without tests has nothing to verify: no verdict, never a free pass.
    return [to_result(next(runs)) if t else RewardResult(None, "no_tests", "the row's 'tests' is empty")
            for t in tests]


def code_reward(prompts, completions, **columns) -> list[float | None]:
    return scores(results(prompts, completions, **columns))


code_reward.results = results
