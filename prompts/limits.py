"""The limits of the prompt sandbox: how large a value, an output and a render may get.

Every render (template files, principle texts, inline templates) runs under one :class:`Budget`,
opened by :func:`budget_scope` and charged by the hooks in :mod:`prompts.sandbox`:

- ``MAX_OUTPUT`` characters of output in all, counted piece by piece as each ``{{ ... }}`` or text
  piece is written, including the pieces that macros, ``{% set %}`` blocks and ``{% filter %}``
  blocks collect before returning them;
- ``MAX_VALUE`` characters for any value a template builds (filter, call, operator, ``~``, list or
  dict literal, slice), measured by :func:`size_of` as the length of ``str(value)`` — a list holding
  the same long string 1,000 times counts 1,000 times, because printing it would write it 1,000
  times; operations whose result can be much larger than their inputs (``*``, ``%``, ``format``,
  ``center``, ``indent``, ``replace``, ``join``, ...) are checked *before* they run;
- ``MAX_ALLOC`` characters for all the values one render builds together (a list item counts 4),
  so that no chain of operations can keep building values until memory runs out;
- ``MAX_STEPS`` steps (loop iterations, calls, filters, intercepted operators, output pieces,
  includes) and ``MAX_SECONDS`` of wall-clock time spent rendering, both checked at every step;
- ``range()`` of at most ``MAX_RANGE`` items, integers of at most ``MAX_INT_BITS`` bits, values
  nested at most ``MAX_DEPTH`` levels deep;
- templates nested at most ``MAX_NESTING`` levels deep (checked when they are parsed, because
  compiling a deeply nested expression takes seconds before anything renders).

Going over any of them raises :class:`SandboxLimitError` (a jinja2 ``SecurityError``) naming the
limit. ``tests/test_sandbox.py`` renders each known way to exhaust memory or time and checks that
it is refused, fast and without allocating more than 50 MB.
"""

from __future__ import annotations

import contextvars
import re
import time
from collections.abc import ItemsView, Iterator, KeysView, Mapping, Set, ValuesView
from contextlib import contextmanager
from itertools import chain

from jinja2.sandbox import SecurityError
from jinja2.utils import Cycler, Namespace
from markupsafe import Markup

MAX_OUTPUT = 1_000_000
MAX_VALUE = 500_000
MAX_ALLOC = 4_000_000
MAX_STEPS = 1_000_000
MAX_SECONDS = 1.0
MAX_RANGE = 10_000
MAX_INT_BITS = 16_384
MAX_DEPTH = 100
# Jinja's code generator takes time cubic in the nesting of an expression (160 nested filters: 6 s to
# compile); the built-in templates nest 9 levels, the dataset card 6.
MAX_NESTING = 32
# textwrap (``wordwrap``) takes ~1.5 s to wrap 1,000,000 characters; 100,000 take ~0.15 s.
MAX_SLOW_INPUT = 100_000


class SandboxLimitError(SecurityError):
    """A render went over one of the sandbox's limits; the message names which."""


class Budget:
    """What one render has spent so far. Time counts only while the budget is active (inside
    :func:`budget_scope`), so a stream read slowly, or several renders sharing one budget with work
    in between, are charged for their own rendering only."""

    __slots__ = ("alloc", "entered", "memo", "output", "spent", "steps")

    def __init__(self) -> None:
        self.spent, self.entered = 0.0, time.monotonic()
        self.steps = self.alloc = self.output = 0
        self.memo: dict[int, tuple[object, int]] = {}  # id -> (object kept alive, size)

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise SandboxLimitError(f"more than {MAX_STEPS:,} steps (loop iterations, calls, filters); "
                                    "the limit keeps every render under about a second")
        if self.spent + time.monotonic() - self.entered > MAX_SECONDS:
            raise SandboxLimitError(f"rendering took longer than the limit of {MAX_SECONDS:g} s")

    def emit(self, text: str) -> str:
        self.output += len(text)
        if self.output > MAX_OUTPUT:
            raise SandboxLimitError(f"output over the limit of {MAX_OUTPUT:,} characters")
        self.step()
        return text

    def charge(self, cost: int) -> None:
        self.alloc += cost
        if self.alloc > MAX_ALLOC:
            raise SandboxLimitError(f"the values built in one render are over the limit of {MAX_ALLOC:,} "
                                    "characters in all")


_CURRENT: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("rlaif_sandbox_budget", default=None)


def current() -> Budget | None:
    """The budget of the render in progress in this thread (None outside a render, e.g. while compiling)."""
    return _CURRENT.get()


@contextmanager
def budget_scope(budget: Budget | None = None):
    """Run a render under ``budget`` (a fresh one by default); a render inside a render shares the outer one."""
    if _CURRENT.get() is not None:
        yield
        return
    budget = budget or Budget()
    budget.entered = time.monotonic()
    token = _CURRENT.set(budget)
    try:
        yield
    except RecursionError:
        raise SandboxLimitError("templates or values nested too deeply (Python's recursion limit)") from None
    finally:
        _CURRENT.reset(token)
        budget.spent += time.monotonic() - budget.entered


def _too_big(what: str, limit: int) -> SandboxLimitError:
    return SandboxLimitError(f"{what} would be over the limit of {limit:,} characters")


def _children(obj: object):
    """The parts of a container that ``str(obj)`` prints, or None for a leaf."""
    if isinstance(obj, Mapping):
        return chain.from_iterable(obj.items())
    if isinstance(obj, ItemsView):
        return chain.from_iterable(obj)
    if isinstance(obj, (list, tuple, Set, KeysView, ValuesView)):
        return obj
    if isinstance(obj, Namespace):
        return chain.from_iterable(obj._Namespace__attrs.items())
    if isinstance(obj, Cycler):
        return obj.items
    return None


def _size(obj: object, limit: int, memo: dict, depth: int) -> int:
    if isinstance(obj, (str, bytes)):
        return len(obj)
    if isinstance(obj, int) and not isinstance(obj, bool):
        return obj.bit_length() * 3 // 10 + 2
    if obj is None or isinstance(obj, (bool, float, complex, range)):
        return 24
    hit = memo.get(id(obj))
    if hit is not None and hit[0] is obj:
        return hit[1]
    if isinstance(obj, (list, tuple)) and len(obj) > 16:
        kinds = set(map(type, obj))  # a long flat list of strings or numbers: measured at C speed
        if kinds <= {str}:
            return 2 + 4 * len(obj) + sum(map(len, obj))
        if kinds <= {int}:
            return 2 + 4 * len(obj) + sum(map(int.bit_length, obj)) * 3 // 10
    parts = _children(obj)
    if parts is None:
        return 100  # functions, macros, loop objects: a short repr
    if depth >= MAX_DEPTH:
        raise SandboxLimitError(f"a value nested more than {MAX_DEPTH} levels deep")
    total = 2
    for part in parts:
        total += _size(part, limit - total, memo, depth + 1) + 2
        if total > limit:
            return total
    if isinstance(obj, (list, tuple, dict, frozenset, set)):
        memo[id(obj)] = (obj, total)  # the sandbox cannot change these while a render runs
    return total


def size_of(obj: object, what: str = "a value", limit: int = MAX_VALUE) -> int:
    """``len(str(obj))``, estimated without building the string (strings inside containers count
    their length plus quotes, so unprintable characters may print up to 10x longer); raises
    :class:`SandboxLimitError` naming ``what`` once it is over ``limit``."""
    budget = _CURRENT.get()
    n = _size(obj, limit, budget.memo if budget is not None else {}, 0)
    if n > limit:
        raise _too_big(what, limit)
    return n


def produced(value, what: str = "a value"):
    """Check and charge a value a template has just built; iterators are counted item by item."""
    budget = _CURRENT.get()
    if isinstance(value, (str, bytes)):
        if len(value) > MAX_VALUE:
            raise _too_big(what, MAX_VALUE)
        cost = len(value)
    elif isinstance(value, Iterator) and budget is not None:
        return counted(value, budget)
    else:
        size_of(value, what)
        cost = 4 * len(value) if isinstance(value, (list, tuple, dict, set, frozenset)) else 1
    if budget is not None:
        budget.charge(cost)
    return value


def counted(iterable, budget: Budget):
    """Iterate ``iterable`` one step per item (a lazy filter result, or what a for loop runs over)."""
    for item in iterable:
        budget.step()
        yield item


def check_int(value: object, what: str, limit: int = MAX_VALUE) -> None:
    """Refuse an integer argument that would make an operation build more than ``limit`` characters."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > limit:
        raise SandboxLimitError(f"{what} {value:,} is over the limit of {limit:,}")


def check_result(bound: int, what: str) -> None:
    """Refuse an operation before it runs when its result could be longer than ``MAX_VALUE``."""
    if bound > MAX_VALUE:
        raise _too_big(what, MAX_VALUE)


_PRINTF = re.compile(r"%(?:\(([^)]*)\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)", re.S)


def check_printf(fmt: object, args: object, what: str) -> None:
    """Bound ``fmt % args`` (``%`` on a string and the ``format`` filter) before it runs."""
    if isinstance(fmt, bytes):
        fmt = fmt.decode("latin-1")
    if not isinstance(fmt, str):
        return
    positional = iter(args) if isinstance(args, tuple) else iter((args,))
    total = len(fmt)
    for m in _PRINTF.finditer(fmt):
        key, width, precision, conversion = m.groups()
        if "*" in (width, precision):
            raise SandboxLimitError(f"{what}: '*' widths are not allowed; write the width as a number")
        width, precision = _digits(width, what), _digits(precision, what)
        if conversion == "%":
            total += max(width, 1)
            continue
        if key is not None:
            arg = args.get(key, "") if isinstance(args, Mapping) else ""
        else:
            arg = next(positional, "")
        total += max(width, size_of(arg, what) + precision)
        check_result(total, what)


def check_format_spec(spec: str, what: str) -> int:
    """Bound one ``str.format`` field spec (``{:10000000}``); returns its largest width or precision."""
    return max((_digits(d, what) for d in re.findall(r"\d+", spec)), default=0)


def _digits(digits: str | None, what: str) -> int:
    """A width or precision written in a format, refused over ``MAX_VALUE``."""
    if digits and (len(digits) > 9 or int(digits) > MAX_VALUE):
        shown = digits if len(digits) <= 12 else digits[:9] + "..."
        raise SandboxLimitError(f"{what}: width {shown} is over the limit of {MAX_VALUE:,}")
    return int(digits or 0)


def _len_scaled(value: object, markup: bool) -> int:
    """Characters ``value`` adds to a string method's result (Markup escapes it: up to 5x)."""
    n = size_of(value) if not isinstance(value, (str, bytes)) else len(value)
    return n * 5 if markup else n


def check_method(method, args: tuple, kwargs: dict) -> tuple:
    """Bound a call of a ``str``/``bytes``/``int`` method before it runs; returns the (possibly
    materialised) positional arguments."""
    owner = getattr(method, "__self__", None)
    if not isinstance(owner, (str, bytes, int)) or isinstance(owner, bool):
        return args
    name = getattr(method, "__name__", "")
    what = f"{type(owner).__name__}.{name}()"
    for arg in chain(args, kwargs.values()):
        check_int(arg, f"{what}: argument")
    if isinstance(owner, int):
        return args
    markup, n = isinstance(owner, Markup), len(owner)
    if name == "join" and args:
        items = list(args[0])
        check_result(n * max(len(items) - 1, 0) + sum(_len_scaled(i, markup) for i in items), what)
        return (items, *args[1:])
    if name == "expandtabs":
        tab = args[0] if args else kwargs.get("tabsize", 8)
        check_result(n + owner.count("\t" if isinstance(owner, str) else b"\t") * max(int(tab), 0), what)
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str if isinstance(owner, str) else bytes):
        old, new = args[0], args[1]
        count = args[2] if len(args) > 2 else kwargs.get("count", -1)
        hits = owner.count(old) if old else n + 1
        hits = min(hits, count) if isinstance(count, int) and count >= 0 else hits
        check_result(n + hits * max(_len_scaled(new, markup) - len(old), 0), what)
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, (str, bytes))), default=1)
        check_result(n * max(longest, 1), what)
    elif name == "encode":
        check_result(n * 10, what)  # 'unicode_escape' writes up to 10 bytes per character
    return args
