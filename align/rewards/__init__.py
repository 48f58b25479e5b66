"""Verifiable rewards for GRPO, each a plain TRL reward function
``f(prompts, completions, **columns) -> list[float | None]`` (None: no verdict). Each also has
``.results(...)`` returning the typed ``RewardResult`` records kept for logging.

``REWARDS`` is the one registry; ``get_reward(name)`` takes, in order:

1. a name from ``REWARDS``;
2. an installed entry point of the group ``rlaif.rewards`` (a package declares
   ``[project.entry-points."rlaif.rewards"] myreward = "mypkg.rewards:my_reward"``);
3. ``module:function`` for user code.

Whatever the source, the function must have the reward signature: its first two parameters are
``prompts`` and ``completions`` (TRL passes them by keyword, our probes by position) and it takes
``**columns`` (TRL adds every dataset column, ``completion_ids`` and ``trainer_state``). That is
checked with ``inspect.signature``, never by calling it: ``--reward os:system`` is refused because
``system(command)`` has not that signature. The name is looked up with the one plugin lookup
(plumbing/plugins.py), so nothing of a user's module runs before its name has passed every check that
can be made without running it: the module is located without importing it or its parent packages,
its source is read, and a function it does not define (the name appears nowhere in the text, and the
module has no ``from ... import *`` or ``__getattr__``) or a plain ``def`` without the signature
(``_check_def``) is refused there; only then is the module imported (its top-level code runs, as any
``import`` does) and the function checked again (tests/test_reward_lookup.py).
An unknown name raises and lists the known ones.
The constitution-judge reward needs an engine, so it is built, not looked up: its name ``judge``
(in ``BUILT``) takes its settings from a GRPO recipe's ``judge:`` mapping
(``align.rewards.judge.build_judge_reward``), or ``make_judge_reward(engine, constitution, config)``.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable

from align.rewards.base import RewardResult
from align.rewards.code import code_reward
from align.rewards.combine import combine
from align.rewards.gsm8k import gsm8k_reward
from align.rewards.math_answer import math_reward
from align.rewards.shape import format_reward, length_reward
from plumbing.plugins import PluginKind, lookup

REWARDS: dict[str, Callable] = {
    "gsm8k": gsm8k_reward,
    "math": math_reward,
    "code": code_reward,
    "format": format_reward,
    "length": length_reward,
}


# Rewards built from a recipe's settings when training starts (they need an engine).
BUILT: tuple[str, ...] = ("judge",)


ENTRY_POINT_GROUP = "rlaif.rewards"
SIGNATURE = "f(prompts, completions, **columns) -> list[float | None]"


def get_reward(name: str) -> Callable:
    """The reward called ``name``: a ``REWARDS`` key, an ``rlaif.rewards`` entry point or ``package.module:function``,
    looked up with the one plugin lookup (plumbing/plugins.py) and checked as the module docstring says. Unknown
    or absent: KeyError; not a reward function: TypeError."""
    if name in BUILT:
        raise KeyError(f"the {name!r} reward is built from a recipe's `{name}:` settings: use it through "
                       f"`rlaif align grpo --reward {name}`, or build it with align.rewards.{name}")
    return lookup(name, KIND)


def _check_signature(name: str, fn) -> None:
    """``fn`` can be called as ``fn(prompts, completions, **columns)``, by position or by keyword."""
    if not callable(fn):
        raise TypeError(f"reward {name!r} is not callable (it is a {type(fn).__name__}); give a function {SIGNATURE}")
    if inspect.isclass(fn):  # calling it would construct an object, not score completions
        raise TypeError(f"reward {name!r} is a class, not a function; give a function {SIGNATURE}")
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        raise TypeError(f"reward {name!r}: its signature cannot be read, so it cannot be checked to be "
                        f"{SIGNATURE}") from None
    positional = [p.name for p in params[:2] if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    if positional != ["prompts", "completions"] or not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        stars = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
        _refuse_signature(name, [stars.get(p.kind, "") + p.name for p in params])


def _refuse_signature(name: str, params: list[str]) -> None:
    raise TypeError(f"reward {name!r} takes ({', '.join(params)}), not a reward's (prompts, completions, **columns); "
                    f"give a function {SIGNATURE}")


def _check_def(name: str, tree: ast.Module, attr: str) -> None:
    """Before the module is imported: a plain ``def attr`` (bound once, undecorated) has the reward signature."""
    head = attr.split(".")[0]
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == head]
    if attr == head and len(defs) == 1 and not defs[0].decorator_list and _bound_once(tree, head):
        args = defs[0].args
        if args.posonlyargs or [a.arg for a in args.args[:2]] != ["prompts", "completions"] or args.kwarg is None:
            _refuse_signature(name, [a.arg for a in (*args.posonlyargs, *args.args)]
                              + ([f"*{args.vararg.arg}"] if args.vararg else []) + [a.arg for a in args.kwonlyargs]
                              + ([f"**{args.kwarg.arg}"] if args.kwarg else []))


def _bound_once(tree: ast.Module, name: str) -> bool:
    """``name`` is bound once in the module (by its ``def``): no assignment, import, ``global`` or other def
    rebinds it, so the def is what the module exports."""
    count = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name == name:
            count += 1
        elif isinstance(node, ast.Name) and node.id == name and not isinstance(node.ctx, ast.Load):
            count += 1
        elif isinstance(node, ast.Global | ast.Nonlocal) and name in node.names:
            count += 1
        elif isinstance(node, ast.Import | ast.ImportFrom):
            count += sum((a.asname or a.name.split(".")[0]) == name for a in node.names)
    return count == 1


KIND = PluginKind("reward", REWARDS, "module:function", f"a function {SIGNATURE}", group=ENTRY_POINT_GROUP,
                  error=KeyError, check=_check_signature, source_check=_check_def, also_known=BUILT)


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


__all__ = ["BUILT", "ENTRY_POINT_GROUP", "REWARDS", "SIGNATURE", "check_reward_names", "RewardResult", "combine",
           "get_reward"]
