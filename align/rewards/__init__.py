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
``system(command)`` has not that signature. Nothing of a user's module runs before its name has
passed every check that can be made without running it: the module is located without importing
it or its parent packages, its source is read, and a function it does not define (the name appears
nowhere in the text, and the module has no ``from ... import *`` or ``__getattr__``) or a plain
``def`` without the signature is refused there; only then is the module imported (its top-level
code runs, as any ``import`` does) and the function checked again (tests/test_reward_lookup.py).
An unknown name raises and lists the known ones.
The constitution-judge reward needs an engine, so it is built, not looked up: its name ``judge``
(in ``BUILT``) takes its settings from a GRPO recipe's ``judge:`` mapping
(``align.rewards.judge.build_judge_reward``), or ``make_judge_reward(engine, constitution, config)``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
from collections.abc import Callable
from pathlib import Path

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


ENTRY_POINT_GROUP = "rlaif.rewards"
SIGNATURE = "f(prompts, completions, **columns) -> list[float | None]"


def get_reward(name: str) -> Callable:
    """The reward called ``name``: a ``REWARDS`` key, an ``rlaif.rewards`` entry point or ``package.module:function``,
    checked as the module docstring says. Unknown or absent: KeyError; not a reward function: TypeError."""
    if name in BUILT:
        raise KeyError(f"the {name!r} reward is built from a recipe's `{name}:` settings: use it through "
                       f"`rlaif align grpo --reward {name}`, or build it with align.rewards.{name}")
    if name in REWARDS:
        return REWARDS[name]
    ep = _entry_point(name)
    target = ep.value if ep is not None else name
    if ":" not in target:
        raise KeyError(f"unknown reward {name!r}; known: {', '.join(sorted([*REWARDS, *BUILT]))}, an installed "
                       f"{ENTRY_POINT_GROUP!r} entry point, or 'module:function' for your own")
    module_name, _, attr = target.partition(":")
    if not all(part.isidentifier() for part in (*module_name.split("."), *attr.split("."))):
        raise KeyError(f"reward {name!r} is not of the form module:function (e.g. mypkg.rewards:my_reward)")
    if module_name not in sys.modules:
        _check_unimported(name, module_name, attr)
    try:
        obj = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - user code may raise anything while it is imported
        raise KeyError(f"reward {name!r}: cannot import module {module_name!r} ({type(exc).__name__}: "
                       f"{' '.join(str(exc).split())})") from None
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    if obj is None:
        raise KeyError(f"reward {name!r}: module {module_name!r} has no attribute {attr!r}")
    _check_signature(name, obj)
    return obj


def _entry_point(name: str):
    from importlib.metadata import entry_points

    return next(iter(entry_points(group=ENTRY_POINT_GROUP, name=name)), None)


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


def _check_unimported(name: str, module_name: str, attr: str) -> None:
    """The checks made before a module is imported: it exists, its source defines ``attr``, and a plain
    ``def attr`` has the reward signature (see the module docstring)."""
    spec = _find_spec(module_name)
    if spec is None:
        raise KeyError(f"reward {name!r}: cannot import module {module_name!r} (no such module on the Python path)")
    tree, text = _source(spec)
    if tree is None:
        return  # compiled or generated: only importing it tells
    head = attr.split(".")[0]
    open_ended = any(isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names) for n in tree.body) or \
        any(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == "__getattr__" for n in tree.body)
    if head not in text and not open_ended:
        raise KeyError(f"reward {name!r}: module {module_name!r} has no attribute {attr!r} (its source "
                       f"{spec.origin} does not mention it)")
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == head]
    if attr == head and len(defs) == 1 and not defs[0].decorator_list and _bound_once(tree, head):
        args = defs[0].args
        if args.posonlyargs or [a.arg for a in args.args[:2]] != ["prompts", "completions"] or args.kwarg is None:
            _refuse_signature(name, [a.arg for a in (*args.posonlyargs, *args.args)]
                              + ([f"*{args.vararg.arg}"] if args.vararg else []) + [a.arg for a in args.kwonlyargs]
                              + ([f"**{args.kwarg.arg}"] if args.kwarg else []))


def _find_spec(module_name: str):
    """The module's spec, found without running its code or its parent packages' (``importlib.util.find_spec``
    imports the parents of a dotted name): each part is looked up by the import system's finders."""
    path, spec = None, None
    parts = module_name.split(".")
    for i in range(len(parts)):
        full = ".".join(parts[: i + 1])
        if full in sys.modules:  # already imported: nothing more runs by looking inside it
            spec = getattr(sys.modules[full], "__spec__", None)
            path = getattr(sys.modules[full], "__path__", None)
        else:
            finders = (getattr(f, "find_spec", None) for f in sys.meta_path)
            spec = next((s for find in finders if find is not None and (s := find(full, path)) is not None), None)
            if spec is None:
                return None
            path = spec.submodule_search_locations
        if path is None and i < len(parts) - 1:
            return None  # a module, not a package: it has no submodules
    return spec


def _source(spec) -> tuple[ast.Module | None, str]:
    origin = getattr(spec, "origin", None)
    if not (getattr(spec, "has_location", False) and origin and origin.endswith(".py")):
        return None, ""
    try:
        text = Path(origin).read_text(encoding="utf-8")
        return ast.parse(text), text
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return None, ""  # importing it will say what is wrong


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
