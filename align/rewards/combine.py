"""Putting rewards together, and the one rule for a reward that gives no verdict.

Weighted sum of rewards as one TRL reward function::

    combined_i = sum_k w_k * r_k,i        (None if any r_k,i is None)

A sample one component cannot score has no combined verdict (TRL leaves it out) rather than a
sum that silently counts the missing part as 0. e.g. weights (1.0, 0.5) on gsm8k 1.0 and format
0.0 -> 1.0; on gsm8k None -> None (tests/test_rewards.py::test_combine_hand_worked).
TRL can also weight several reward functions itself (``GRPOConfig.reward_weights``); this is for
one named reward made of parts.

A reward that gives no verdict for ANY completion of a training step (every process together) is
broken, not unlucky: the code reward whose sandbox lacks the rights it needs returns
``sandbox_error`` for every program. Training on would use the other terms alone (PPO's KL penalty
and EOS penalty, GRPO's other rewards) and look like a run. ``require_a_verdict`` stops it with
one line naming the reward and its reasons (``NoVerdictError``, exit 2 from the CLI); align/grpo.py and
align/ppo/rollout.py call it after each reward's call with the counts of all processes
(tests/test_ppo_train.py::test_a_reward_without_any_verdict_stops_ppo_in_one_line,
tests/test_grpo.py::test_grpo_run_without_any_verdict_exits_2_in_one_line).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from align.rewards.base import RewardResult


class NoVerdictError(RuntimeError):
    """A reward returned None for every completion of a step; the message names it and says why."""


def combine(reward_funcs: Sequence[Callable], weights: Sequence[float] | None = None) -> Callable:
    if not reward_funcs:
        raise ValueError("combine: give at least one reward function")
    weights = [1.0] * len(reward_funcs) if weights is None else [float(w) for w in weights]
    if len(weights) != len(reward_funcs):
        raise ValueError(f"combine: {len(reward_funcs)} reward functions but {len(weights)} weights")
    for f in reward_funcs:
        if not callable(f):
            raise TypeError(f"combine: {f!r} is not callable")

    def combined(prompts, completions, **columns) -> list[float | None]:
        parts = [list(f(prompts, completions, **columns)) for f in reward_funcs]
        for f, p in zip(reward_funcs, parts, strict=True):
            if len(p) != len(completions):
                raise ValueError(f"combine: {getattr(f, '__name__', f)} returned {len(p)} scores "
                                 f"for {len(completions)} completions")
        out: list[float | None] = []
        for sample in zip(*parts, strict=True):
            out.append(None if any(s is None for s in sample) else
                       sum(w * s for w, s in zip(weights, sample, strict=True)))
        return out

    combined.__name__ = "+".join(getattr(f, "__name__", "reward") for f in reward_funcs)
    return combined


def reward_results(reward: Callable, prompts, completions, **columns) -> list[RewardResult]:
    """A reward's typed records: ``reward.results`` for the built-in ones, else the plain function's
    scores as ``scored`` / ``no_verdict`` records (a user's ``module:function`` gives no reasons)."""
    results = getattr(reward, "results", None)
    if results is not None:
        return list(results(prompts, completions, **columns))
    return [RewardResult(s, "scored" if s is not None else "no_verdict") for s in reward(prompts, completions,
                                                                                           **columns)]


def silence(records: Sequence[RewardResult]) -> tuple[int, int, Counter]:
    """(verdicts, completions, counts of the ``status: reason`` of those without a verdict)."""
    why = Counter(f"{r.status}: {r.reason}" if r.reason else r.status for r in records if r.score is None)
    return len(records) - sum(why.values()), len(records), why


def require_a_verdict(name: str, verdicts: int, total: int, why: Counter, method: str) -> None:
    """Raise ``NoVerdictError`` when the step's ``total`` completions (all processes) got no verdict
    from reward ``name``; ``why`` counts the reasons given (this process's, or all of them)."""
    if verdicts or not total:
        return
    reasons = "; ".join(f"{n} x {' '.join(text.split())[:160]}" for text, n in why.most_common(3)) or "no reason given"
    raise NoVerdictError(f"reward {name!r} gave no verdict for any of the {total} completions of a {method} step "
                         f"({reasons}); {method} stops rather than train without it: fix the cause the reasons name "
                         f"(e.g. the code reward's sandbox needs root), or drop the reward")
