"""The one sandboxed Jinja renderer every stage uses, plus the built-in templates.

Every prompt is a ``.jinja`` file in this folder (documented in ``prompts/README.md``);
users can point any stage at their own folder, whose files shadow the built-in ones.
Templates and constitution texts render in ``ImmutableSandboxedEnvironment`` with
``StrictUndefined``: they can never reach Python objects, files or the network, and a
misspelt variable is an error rather than an empty string. ``*`` and ``**`` are bounded so a
template cannot allocate gigabytes (other filters, e.g. ``center``, are not).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from jinja2 import FileSystemLoader, StrictUndefined, TemplateError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

BUILTIN_DIR = Path(__file__).resolve().parent

# The templates each stage renders; their hashes go into the run spec.
CRITIQUE = "critique.jinja"
REVISION = "revision.jinja"
PAIRWISE = "judge/pairwise.jinja"
PAIRWISE_COT = "judge/pairwise_cot.jinja"

__all__ = [
    "BUILTIN_DIR",
    "PromptError",
    "SecurityError",
    "environment",
    "render",
    "render_text",
    "template_source",
    "template_sha256",
    "undeclared_variables",
    "unsafe_constructs",
]


class PromptError(ValueError):
    """A template could not be found, parsed or rendered; the message says which and why."""


# The most characters/items one `*` may build and the most bits one `**` may produce: a template
# cannot make the renderer allocate gigabytes (`{{ 'a' * 10**9 }}`, `{{ 9 ** 9 ** 9 }}`).
MAX_REPEAT = 1_000_000
MAX_POWER_BITS = 4096


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with `*` and `**` refused when their result would be huge."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            seq, count = (left, right) if isinstance(left, (str, list, tuple)) else (right, left)
            if isinstance(seq, (str, list, tuple)) and isinstance(count, int) and len(seq) * count > MAX_REPEAT:
                raise SecurityError(f"'*' would build {len(seq) * count:,} items (limit {MAX_REPEAT:,})")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            if right * abs(left).bit_length() > MAX_POWER_BITS:
                raise SecurityError(f"'**' result too large (over {MAX_POWER_BITS} bits)")
        return super().call_binop(context, operator, left, right)


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


def render(name: str, templates_dir: str | Path | None = None, /, **context) -> str:
    """Render the template file ``name`` (e.g. ``judge/pairwise.jinja``) with ``context``."""
    env = environment(str(templates_dir) if templates_dir else None)
    try:
        return env.get_template(name).render(**context)
    except SecurityError as e:
        raise PromptError(f"template {name}: unsafe construct refused by the sandbox ({e})") from None
    except TemplateError as e:
        where = f"{name}:{e.lineno}" if getattr(e, "lineno", None) else name
        raise PromptError(f"template {where}: {e.message or e}") from None


def render_text(source: str, /, **context) -> str:
    """Render an inline template (a principle text) in the same sandbox."""
    env = environment(None)
    return env.from_string(source).render(**context)


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


def undeclared_variables(source: str) -> set[str]:
    """Names a template reads from its context (raises ``TemplateSyntaxError`` on bad syntax)."""
    env = environment(None)
    return meta.find_undeclared_variables(env.parse(source)) - set(env.globals)


def unsafe_constructs(source: str) -> list[tuple[int, str]]:
    """Static check for attempts to reach Python internals: ``(line, what)`` for each.

    The sandbox already refuses these at render time; this finds them in branches
    that a sample render would not take (``{% if false %}{{ x.__class__ }}{% endif %}``).
    """
    env = environment(None)
    found: list[tuple[int, str]] = []
    for node in env.parse(source).find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            found.append((node.lineno, f"attribute {node.attr!r}"))
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) \
                and isinstance(node.arg.value, str) and node.arg.value.startswith("_"):
            found.append((node.lineno, f"item {node.arg.value!r}"))
        elif isinstance(node, nodes.Filter) and node.name == "attr":
            found.append((node.lineno, "filter 'attr'"))
    return found
