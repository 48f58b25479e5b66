"""Weighted sum of rewards as one TRL reward function::

    combined_i = sum_k w_k * r_k,i        (None if any r_k,i is None)

A sample one component cannot score has no combined verdict (TRL leaves it out) rather than a
sum that silently counts the missing part as 0. e.g. weights (1.0, 0.5) on gsm8k 1.0 and format
0.0 -> 1.0; on gsm8k None -> None (tests/test_rewards.py::test_combine_hand_worked).
TRL can also weight several reward functions itself (``GRPOConfig.reward_weights``); this is for
one named reward made of parts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


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
