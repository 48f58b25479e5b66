"""Verifiable rewards for GRPO, each a plain TRL reward function
``f(prompts, completions, **columns) -> list[float | None]`` (None: no verdict). Each also has
``.results(...)`` returning the typed ``RewardResult`` records kept for logging.

``REWARDS`` is the one registry; ``get_reward(name)`` takes a name from it or ``module:function``
for a user reward (checked to be callable). An unknown name raises and lists the known ones.
The constitution-judge reward needs an engine, so it is built, not looked up: its name ``judge``
(in ``BUILT``) takes its settings from a GRPO recipe's ``judge:`` mapping
(``align.rewards.judge.build_judge_reward``), or ``make_judge_reward(engine, constitution, config)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from align.rewards.base import RewardResult
from align.rewards.code import code_reward
from align.rewards.combine import combine
from align.rewards.gsm8k import gsm8k_reward
from align.rewards.math_answer import math_reward
from align.rewards.shape import format_reward, length_reward

REWARDS: dict[str, Callable] = {
    "gsm8k": gsm8k_reward,
    "math": math_reward,
    "code": code_reward,
    "format": format_reward,
    "length": length_reward,
}


# Rewards built from a recipe's settings when training starts (they need an engine).
BUILT: tuple[str, ...] = ("judge",)


def get_reward(name: str) -> Callable:
    """The reward called ``name``: a ``REWARDS`` key or ``package.module:function``."""
    if name in BUILT:
        raise KeyError(f"the {name!r} reward is built from a recipe's `{name}:` settings: use it through "
                       f"`rlaif align grpo --reward {name}`, or build it with align.rewards.{name}")
    if name in REWARDS:
        return REWARDS[name]
    if ":" not in name:
        raise KeyError(f"unknown reward {name!r}; known: {', '.join(sorted([*REWARDS, *BUILT]))}, "
                       f"or 'module:function' for your own")
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise KeyError(f"reward {name!r}: cannot import module {module_name!r} ({exc})") from exc
    fn = getattr(module, attr, None)
    if fn is None:
        raise KeyError(f"reward {name!r}: module {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise TypeError(f"reward {name!r} is not callable (it is a {type(fn).__name__}); "
                        f"give a function f(prompts, completions, **columns) -> list[float | None]")
    return fn


def check_reward_names(names: list[str], built: tuple[str, ...] = BUILT) -> list[str]:
    """A recipe's ``reward_funcs``: each a known reward (or one of ``built``, made when training starts),
    none twice; raises ValueError naming the first that is not (the recipes' validators call this)."""
    for name in names:
        if name in built:
            continue
        try:
            get_reward(name)
        except (KeyError, TypeError) as e:
            raise ValueError(e.args[0] if e.args else str(e)) from None
    if len(set(names)) != len(names):
        raise ValueError(f"a reward is named twice ({', '.join(names)}); give each once and weight it with "
                         f"reward_weights")
    return names


__all__ = ["BUILT", "REWARDS", "check_reward_names", "RewardResult", "combine", "get_reward"]
