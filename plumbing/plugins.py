"""Plugins looked up by name: a built-in name, an installed entry point, or ``module:name`` for user code.

``lookup(name, kind)`` is the one lookup of every kind of plugin: engines (generator/engines/__init__.py,
``module:Class``), rewards (align/rewards/__init__.py, ``module:function``) and align methods (align/__init__.py).
A name is, in order:

1. a key of the kind's built-in registry (its value is the object, or ``module:attr`` imported on first use);
2. an installed entry point of the kind's group (a package declares
   ``[project.entry-points."rlaif.engines"] mine = "mypkg.engine:MyEngine"``);
3. ``module:attr`` (dotted names: ``pkg.module:Outer.attr``).

Nothing of a user's module runs before its name has passed every check that can be made without running it:
the module is located without importing it or its parent packages, its source is read, and a name its source
does not mention (unless the module has a ``from ... import *`` or a module ``__getattr__``) is refused there;
a kind may check the parsed source further (``PluginKind.source_check``: the reward signature of a plain
``def``). Only then is the module imported (its top-level code runs, as any ``import`` does: name only modules
you trust) and the object checked by the kind (``PluginKind.check``: an engine is an ``EngineBase`` class, a
reward has the reward signature), never called (tests/test_plugins.py, tests/test_reward_lookup.py,
tests/test_engine_registry.py).

Every refusal is one line, raised as the kind's error: ``<kind> '<name>': <what is wrong>; <how to fix>``
(an unknown name: ``unknown <kind> '<name>'; known: ...``).
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PluginKind:
    """One kind of plugin: how its names are looked up, checked and explained."""

    kind: str  # "engine", "reward", "align method": the first words of every message
    builtins: Mapping[str, Any]  # name -> the object, or "module:attr" imported on first use
    form: str  # "module:Class"
    meaning: str  # what the named object must be: "a class derived from ..."
    group: str | None = None  # the entry-point group, if installed packages may add names
    error: type[Exception] = LookupError  # raised when a name names nothing
    check: Callable[[str, Any], None] | None = None  # (name, object): raises for an object of another kind
    source_check: Callable[[str, ast.Module, str], None] | None = None  # (name, module source, attr), pre-import
    also_known: tuple[str, ...] = ()  # names the caller handles itself, listed among the known ones

    def known(self) -> str:
        names = ", ".join(sorted([*self.builtins, *self.also_known]))
        installed = f", an installed {self.group!r} entry point" if self.group else ""
        return f"known: {names}{installed}, or {self.form} for your own ({self.meaning})"

    def fail(self, name: str, problem: str, fix: str | None = None) -> Exception:
        """The kind's error: ``<kind> '<name>': <problem>; <fix>`` (the known names unless ``fix`` is given)."""
        return self.error(f"{self.kind} {name!r}{problem}; {fix or self.known()}")


def lookup(name: str, kind: PluginKind) -> Any:
    """The object ``name`` stands for, checked as the module docstring says (``kind.error`` when it names
    nothing, ``kind.check``'s error when it names something of another kind)."""
    if name in kind.builtins:
        target = kind.builtins[name]
        if not isinstance(target, str):
            return target
        return _load(name, kind, target, trusted=True)
    ep = entry_point(kind.group, name) if kind.group else None
    if ep is not None:
        return _load(name, kind, ep.value, trusted=False)
    if ":" not in name:
        raise kind.error(f"unknown {kind.kind} {name!r}; {kind.known()}")
    return _load(name, kind, name, trusted=False)


def entry_point(group: str, name: str):
    """The installed entry point ``name`` of ``group``, or None."""
    from importlib.metadata import entry_points

    return next(iter(entry_points(group=group, name=name)), None)


def split_target(name: str, kind: PluginKind, target: str) -> tuple[str, str]:
    """``module:attr`` -> (module, attr), both dotted identifiers, else the kind's error."""
    module, _, attr = target.partition(":")
    if not module or not attr or not all(p.isidentifier() for p in (*module.split("."), *attr.split("."))):
        raise kind.fail(name, f" is not of the form {kind.form}")
    return module, attr


def _load(name: str, kind: PluginKind, target: str, trusted: bool) -> Any:
    module_name, attr = split_target(name, kind, target)
    if not trusted and module_name not in sys.modules:
        _check_unimported(name, kind, module_name, attr)
    try:
        obj = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - user code may raise anything while it is imported
        raise kind.fail(name, f": module {module_name!r} cannot be imported ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())})", "fix the module, or name another") from None
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    if obj is None:
        raise kind.fail(name, f": module {module_name!r} has no attribute {attr!r}", "check the name against the module")
    if kind.check is not None:
        kind.check(name, obj)
    return obj


def _check_unimported(name: str, kind: PluginKind, module_name: str, attr: str) -> None:
    """The checks made before a module is imported: it exists, and its source mentions ``attr``."""
    spec = find_spec_unimported(module_name)
    if spec is None:
        raise kind.fail(name, f": module {module_name!r} cannot be imported (no such module on the Python path)",
                        "check the name, or install the package that provides it")
    tree, text = module_source(spec)
    if tree is None:
        return  # compiled or generated: only importing it tells
    head = attr.split(".")[0]
    open_ended = any(isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names) for n in tree.body) or \
        any(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == "__getattr__" for n in tree.body)
    if head not in text and not open_ended:
        raise kind.fail(name, f": module {module_name!r} has no attribute {attr!r} (its source {spec.origin} "
                              f"does not mention it)", "check the name against the module")
    if kind.source_check is not None:
        kind.source_check(name, tree, attr)


def find_spec_unimported(module_name: str):
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


def module_source(spec) -> tuple[ast.Module | None, str]:
    """The parsed source of a module with a ``.py`` file, and its text; (None, "") otherwise."""
    origin = getattr(spec, "origin", None)
    if not (getattr(spec, "has_location", False) and origin and origin.endswith(".py")):
        return None, ""
    try:
        text = Path(origin).read_text(encoding="utf-8")
        return ast.parse(text), text
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return None, ""  # importing it will say what is wrong


__all__ = ["PluginKind", "entry_point", "find_spec_unimported", "lookup", "module_source", "split_target"]
