"""The bounded filters and globals of the prompt sandbox (:mod:`prompts.sandbox`).

Every jinja2 filter is wrapped by :func:`bounded_filter`: one step of the render's budget per call,
a check of its arguments before it runs for the filters whose result can outgrow their input
(``FILTER_CHECKS``), and a check of its result after (:func:`prompts.limits.produced`). ``range``,
``lipsum`` and ``|tojson``'s JSON writer are replaced by bounded versions. The limits themselves are
in :mod:`prompts.limits`; ``tests/test_sandbox.py`` tests each check with a hostile template.
"""

from __future__ import annotations

import functools
import inspect
import json

from jinja2.filters import make_attrgetter
from jinja2.sandbox import SecurityError
from jinja2.utils import generate_lorem_ipsum
from markupsafe import Markup

from prompts.limits import (
    MAX_RANGE,
    MAX_SLOW_INPUT,
    MAX_VALUE,
    SandboxLimitError,
    check_int,
    check_printf,
    check_result,
    current,
    produced,
    size_of,
)

REMOVED_FILTERS = ("pprint", "urlize")


def bounded_range(*args):
    """``range`` of at most ``MAX_RANGE`` items."""
    rng = range(*args)
    try:
        n = len(rng)
    except OverflowError:
        n = MAX_RANGE + 1
    if n > MAX_RANGE:
        raise SandboxLimitError(f"range() of more than {MAX_RANGE:,} items (the limit)")
    return rng


def bounded_lipsum(n=5, html=True, min=20, max=100):  # noqa: A002 - jinja's names
    """``lipsum`` whose paragraphs and words are bounded."""
    if all(isinstance(v, int) for v in (n, min, max)):
        for value, name in ((n, "n"), (min, "min"), (max, "max")):
            check_int(value, f"lipsum(): {name}", MAX_VALUE // 12)
        check_result(n * (max if max > min else min) * 12, "lipsum()")
    return generate_lorem_ipsum(n, html, min, max)


def bounded_dumps(obj, **kwargs) -> str:
    """``json.dumps`` for ``|tojson``, written piece by piece and stopped past ``MAX_VALUE``."""
    budget, parts, total = current(), [], 0
    for i, chunk in enumerate(json.JSONEncoder(**kwargs).iterencode(obj)):
        total += len(chunk)
        check_result(total, "|tojson")
        if budget is not None and i % 1024 == 0:
            budget.step()
        parts.append(chunk)
    return "".join(parts)


def _text(value) -> str | None:
    return value if isinstance(value, str) else None


def _check_indent(a):
    s, width = a["s"], a["width"]
    check_int(width, "|indent: width")
    prefix = len(width) if isinstance(width, str) else (width if isinstance(width, int) else 0)
    lines = s.count("\n") + 1 if isinstance(s, str) else 1
    check_result(size_of(s, "|indent") + lines * (max(prefix, 0) + 1), "|indent")


def _check_wordwrap(a):
    s, width, wrap = a["s"], a["width"], a["wrapstring"] or "\n"
    n = size_of(s, "|wordwrap")
    if n > MAX_SLOW_INPUT:
        raise SandboxLimitError(f"|wordwrap: input of {n:,} characters is over the limit of {MAX_SLOW_INPUT:,}")
    breaks = s.count("\n") if isinstance(s, str) else 0
    lines = 2 * n // (width if isinstance(width, int) and width > 0 else 1) + breaks + 2
    check_result(n + lines * len(str(wrap)), "|wordwrap")


def _check_replace(a):
    s, old, new, count = a["s"], str(a["old"]), str(a["new"]), a["count"]
    text = _text(s)
    n = len(text) if text is not None else size_of(s, "|replace")
    hits = text.count(old) if text is not None and old else n + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    scale = 5 if a["eval_ctx"].autoescape else 1
    check_result(n + hits * max(len(new) * scale - len(old), 0), "|replace")


def _check_join(a):
    items = list(a["value"])
    if a["attribute"] is not None:
        getter = make_attrgetter(a["eval_ctx"].environment, a["attribute"])
        items = [getter(item) for item in items]
        a["attribute"] = None
    sep = size_of(a["d"], "|join")
    check_result(sum(size_of(i, "|join") for i in items) + sep * max(len(items) - 1, 0), "|join")
    a["value"] = items


def _check_escape(a):
    s = next(iter(a.values()))
    if isinstance(s, str) and not isinstance(s, Markup):
        check_result(len(s) + 4 * sum(s.count(c) for c in "<>&\"'"), "|escape")


def _check_urlencode(a):
    value = a["value"]
    n = size_of(value, "|urlencode")
    check_result(n * (3 if isinstance(value, str) and value.isascii() else 12), "|urlencode")


def _check_batch(a):
    check_int(a["linecount"], "|batch: size", MAX_VALUE // 4)
    if a["fill_with"] is not None and isinstance(a["linecount"], int):
        check_result(a["linecount"] * (size_of(a["fill_with"], "|batch") + 2), "|batch")


def _check_tojson(a):
    indent = a["indent"]
    if isinstance(indent, str) and len(indent) > 16:
        raise SandboxLimitError("|tojson: an indent string of more than 16 characters")
    check_int(indent, "|tojson: indent", 16)


FILTER_CHECKS = {
    "center": lambda a: check_int(a["width"], "|center: width"),
    "indent": _check_indent,
    "wordwrap": _check_wordwrap,
    "replace": _check_replace,
    "join": _check_join,
    "format": lambda a: check_printf(a["value"], a["kwargs"] or a["args"], "|format"),
    "batch": _check_batch,
    "slice": lambda a: check_int(a["slices"], "|slice: count", MAX_RANGE),
    "round": lambda a: check_int(a["precision"], "|round: precision", 400),
    "escape": _check_escape,
    "e": _check_escape,
    "forceescape": _check_escape,
    "urlencode": _check_urlencode,
    "tojson": _check_tojson,
}


def _signature(func) -> inspect.Signature:
    """The arguments ``func`` is called with, including the context jinja passes first, if any."""
    try:
        sig = inspect.signature(func)
    except ValueError:  # a C function (markupsafe.escape): one positional argument
        return inspect.Signature([inspect.Parameter("s", inspect.Parameter.POSITIONAL_ONLY)])
    first = next(iter(sig.parameters), None)
    if getattr(func, "jinja_pass_arg", None) is not None and first not in ("eval_ctx", "environment", "context"):
        # jinja's async variants (`slice`, `join`, ...) pass the eval context their sync signature hides
        passed = inspect.Parameter("_passed", inspect.Parameter.POSITIONAL_ONLY)
        return sig.replace(parameters=[passed, *sig.parameters.values()])
    return sig


def bounded_filter(name: str, func):
    """``func`` with one step per call, its arguments checked (``FILTER_CHECKS``) and its result checked."""
    check = FILTER_CHECKS.get(name)
    signature = _signature(func) if check is not None else None
    what = f"the result of |{name}"

    @functools.wraps(func)
    def bounded(*args, **kwargs):
        budget = current()
        if budget is None:  # jinja folds constant expressions at compile time: not through the budget
            raise SecurityError(f"|{name} runs only while a template renders")
        budget.step()
        if check is not None:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError:
                bound = None  # the filter raises its own error about its arguments
            if bound is not None:
                bound.apply_defaults()
                check(bound.arguments)
                args, kwargs = bound.args, bound.kwargs
        return produced(func(*args, **kwargs), what)

    return bounded
