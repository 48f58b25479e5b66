"""Shape rewards: ``format`` (the completion matches a regex, by default the DeepSeek-R1 layout
``<think>...</think>`` then an answer, arXiv 2501.12948 sec 2.2.2) and ``length`` (closeness to
a target length in words, with a tolerance band and a linear falloff)::

    length_score(n) = 1                                   if |n - target| <= tolerance
                    = max(0, 1 - (|n - target| - tolerance) / falloff)   otherwise

e.g. target 100, tolerance 10, falloff 50: n=105 -> 1.0, n=130 -> 1 - 20/50 = 0.6, n=40 -> 0.0
(tests/test_rewards.py::test_length_hand_worked).
"""

from __future__ import annotations

import re
from functools import partial

from align.rewards.base import RewardResult, completion_text, scores

DEFAULT_FORMAT = r"^\s*<think>.+?</think>\s*\S.*$"


def format_one(completion: str, pattern: str = DEFAULT_FORMAT) -> RewardResult:
    ok = re.fullmatch(pattern, completion, flags=re.DOTALL) is not None
    return RewardResult(1.0 if ok else 0.0, "match" if ok else "no_match", f"pattern {pattern!r}")


def length_one(completion: str, target: int = 200, tolerance: int = 20, falloff: int = 100) -> RewardResult:
    n = len(completion.split())
    off = abs(n - target)
    score = 1.0 if off <= tolerance else max(0.0, 1.0 - (off - tolerance) / falloff)
    return RewardResult(score, "scored", f"{n} words, target {target} +- {tolerance}", raw={"words": n})


def make_format_reward(pattern: str = DEFAULT_FORMAT):
    """A TRL reward for ``pattern`` (a recipe can set its own); the pattern is checked here."""
    re.compile(pattern)
    return _wrap(partial(format_one, pattern=pattern), "format")


def make_length_reward(target: int = 200, tolerance: int = 20, falloff: int = 100):
    if target <= 0 or tolerance < 0 or falloff <= 0:
        raise ValueError(f"length reward: need target > 0, tolerance >= 0, falloff > 0 "
                         f"(got {target}, {tolerance}, {falloff})")
    return _wrap(partial(length_one, target=target, tolerance=tolerance, falloff=falloff), "length")


def _wrap(one, name: str):
    def results(prompts, completions, **columns) -> list[RewardResult]:
        return [one(completion_text(c)) for c in completions]

    def reward_fn(prompts, completions, **columns) -> list[float | None]:
        return scores(results(prompts, completions, **columns))

    reward_fn.__name__ = reward_fn.__qualname__ = name
    reward_fn.results = results
    return reward_fn


format_reward = make_format_reward()
length_reward = make_length_reward()
