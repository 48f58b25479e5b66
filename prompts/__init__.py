"""The one sandboxed Jinja renderer every stage uses, plus the built-in templates.

Every prompt is a ``.jinja`` file in this folder (documented in ``prompts/README.md``);
users can point any stage at their own folder, whose files shadow the built-in ones.
Templates, principle texts and inline templates (:func:`render_text`) render in
:class:`prompts.sandbox.BoundedSandbox`: jinja2's ``ImmutableSandboxedEnvironment`` with
``StrictUndefined`` (no Python internals, no changing lists or dicts, a misspelt variable is an
error rather than an empty string), plus bounds on work. A render stops past 1,000,000 characters
of output, 500,000 characters for any value it builds, 4,000,000 characters built in all,
1,000,000 steps or 1 s of wall-clock time spent rendering, and a template nested more than 32 levels is refused
when parsed (the numbers and what they count: ``prompts/limits.py``). :func:`render` and
:func:`render_text` turn every failure into a one-line :class:`PromptError`
(:class:`UnsafeTemplateError` for the sandbox's refusals); ``constitution.schema`` into a
``TemplateProblem``. ``tests/test_sandbox.py`` is the proof, case by case: each of 62 hostile
templates (huge widths and counts for filters, string methods and formats, doubling loops, nested
loops, recursion, shared references that would print huge, ...) is refused in under 2.5 s of
wall-clock time while Python's traced allocations stay under 50 MB, through :func:`render_text`,
through :func:`render` from a template file and through a constitution file (whose loop-free texts
are rendered, the others refused for their tags); the built-in templates render a 50-turn
conversation exactly as jinja2's own sandbox does.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from jinja2 import FileSystemLoader, StrictUndefined, TemplateError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from prompts.limits import SandboxLimitError
from prompts.sandbox import BoundedSandbox

BUILTIN_DIR = Path(__file__).resolve().parent

# The templates each stage renders; their hashes go into the run spec.
CRITIQUE = "critique.jinja"
REVISION = "revision.jinja"
PAIRWISE = "judge/pairwise.jinja"
PAIRWISE_COT = "judge/pairwise_cot.jinja"

__all__ = [
    "BUILTIN_DIR",
    "BoundedSandbox",
    "PromptError",
    "SandboxLimitError",
    "SecurityError",
    "UnsafeTemplateError",
    "environment",
    "node_count",
    "render",
    "render_text",
    "statement_tags",
    "template_source",
    "template_sha256",
    "undeclared_variables",
    "unsafe_constructs",
]


class PromptError(ValueError):
    """A template could not be found, parsed or rendered; the message says which and why."""


class UnsafeTemplateError(PromptError, SecurityError):
    """The sandbox refused a template (it reached for Python internals or went over a limit of
    :mod:`prompts.limits`): a :class:`PromptError` that is also jinja2's ``SecurityError``."""


def _make_env(search_path: tuple[str, ...]) -> ImmutableSandboxedEnvironment:
    return BoundedSandbox(
        loader=FileSystemLoader(list(search_path)) if search_path else None,
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,  # a file's final newline is not part of the prompt
        trim_blocks=True,
        lstrip_blocks=True,
    )


@lru_cache(maxsize=16)
def environment(templates_dir: str | None = None) -> ImmutableSandboxedEnvironment:
    """The sandboxed environment; ``templates_dir`` (if given) shadows the built-in templates."""
    path = ([str(Path(templates_dir).resolve())] if templates_dir else []) + [str(BUILTIN_DIR)]
    if templates_dir and not Path(templates_dir).is_dir():
        raise PromptError(f"templates folder {templates_dir} does not exist")
    return _make_env(tuple(path))


# What a render may fail with: jinja's errors (the sandbox's refusals among them) and what Python raises
# for a bad operation in a template, e.g. {{ 1 / 0 }} or {{ "a" + 1 }}.
_FAILURES = (TemplateError, TypeError, ValueError, ArithmeticError, LookupError, RecursionError)


def render(name: str, templates_dir: str | Path | None = None, /, **context) -> str:
    """Render the template file ``name`` (e.g. ``judge/pairwise.jinja``) with ``context``; every failure,
    a sandbox limit included, is a one-line :class:`PromptError`."""
    env = environment(str(templates_dir) if templates_dir else None)
    try:
        return env.get_template(name).render(**context)
    except _FAILURES as e:
        raise _problem(f"template {name}", e) from None


def render_text(source: str, /, **context) -> str:
    """Render an inline template (e.g. a dataset card read from a file) in the same bounded sandbox;
    every failure is a one-line :class:`PromptError`, as for :func:`render`."""
    try:
        return environment(None).from_string(source).render(**context)
    except _FAILURES as e:
        raise _problem("template text", e) from None


def _problem(where: str, e: BaseException) -> PromptError:
    if isinstance(e, SecurityError):
        return UnsafeTemplateError(f"{where}: unsafe construct refused by the sandbox ({e})")
    if isinstance(e, TemplateError):
        line = getattr(e, "lineno", None)
        return PromptError(f"{where}{f':{line}' if line else ''}: {' '.join((e.message or str(e)).split())}")
    if isinstance(e, RecursionError):
        return PromptError(f"{where}: nested too deeply (Python's recursion limit)")
    return PromptError(f"{where}: {type(e).__name__}: {' '.join(str(e).split())}")


def template_source(name: str, templates_dir: str | Path | None = None) -> str:
    env = environment(str(templates_dir) if templates_dir else None)
    try:
        source, _, _ = env.loader.get_source(env, name)
    except TemplateError as e:
        raise PromptError(f"template {name} not found in {templates_dir or BUILTIN_DIR}: {e}") from None
    return source


def template_sha256(names: list[str] | tuple[str, ...], templates_dir: str | Path | None = None) -> str:
    """sha256 over the sources of ``names`` (in order), as resolved for ``templates_dir``."""
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode() + b"\0" + template_source(name, templates_dir).encode() + b"\0")
    return h.hexdigest()


@lru_cache(maxsize=8)
def _parse(source: str) -> nodes.Template:
    """Parse ``source`` (``TemplateSyntaxError`` also for nesting over ``limits.MAX_NESTING``). Cached for
    the checks below that read the same text in turn; they only read the tree."""
    return environment(None).parse(source)


# The tag that writes each kind of statement node.
_TAGS = {nodes.Assign: "set", nodes.AssignBlock: "set", nodes.FromImport: "from", nodes.ExprStmt: "do",
         nodes.ScopedEvalContextModifier: "autoescape", nodes.EvalContextModifier: "autoescape",
         nodes.CallBlock: "call", nodes.FilterBlock: "filter"}


def statement_tags(source: str) -> list[tuple[int, str]]:
    """``(line, tag)`` for every ``{% tag %}`` statement in ``source`` (``for``, ``set``, ``if``,
    ``macro``, ...), in document order; ``{{ ... }}`` output and plain text are not statements.
    Raises ``TemplateSyntaxError`` on bad syntax."""
    found: list[tuple[int, str]] = []
    stack: list[tuple[nodes.Node, int]] = [(_parse(source), 1)]
    while stack:
        node, line = stack.pop()
        line = node.lineno or line  # a node jinja made without a line sits on its parent's
        if isinstance(node, nodes.Stmt) and not isinstance(node, (nodes.Output, nodes.Scope)):  # Scope: a wrapper
            found.append((line, _TAGS.get(type(node), type(node).__name__.lower())))
        stack.extend((child, line) for child in reversed(list(node.iter_child_nodes())))
    return found


def node_count(source: str) -> int:
    """How many Jinja nodes ``source`` parses into (each piece of text, name, constant, operator, filter
    and tag counts one): what compiling it costs, ~0.1-0.3 ms each. Raises ``TemplateSyntaxError``."""
    return sum(1 for _ in _parse(source).find_all(nodes.Node)) + 1


def undeclared_variables(source: str) -> set[str]:
    """Names a template reads from its context (raises ``TemplateSyntaxError`` on bad syntax)."""
    return meta.find_undeclared_variables(_parse(source)) - set(environment(None).globals)


def unsafe_constructs(source: str) -> list[tuple[int, str]]:
    """Static check for attempts to reach Python internals: ``(line, what)`` for each.

    The sandbox already refuses these at render time; this finds them in branches
    that a sample render would not take (``{% if false %}{{ x.__class__ }}{% endif %}``).
    """
    found: list[tuple[int, str]] = []
    for node in _parse(source).find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            found.append((node.lineno, f"attribute {node.attr!r}"))
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) \
                and isinstance(node.arg.value, str) and node.arg.value.startswith("_"):
            found.append((node.lineno, f"item {node.arg.value!r}"))
        elif isinstance(node, nodes.Filter) and node.name == "attr":
            found.append((node.lineno, "filter 'attr'"))
    return found
