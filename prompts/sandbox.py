"""The bounded Jinja sandbox: ``ImmutableSandboxedEnvironment`` plus the limits of :mod:`prompts.limits`.

The immutable sandbox already keeps templates away from Python internals and from changing
lists and dicts. What it does not bound is work: a template could ask for
``{{ 'x'|center(10**9) }}``, double a string forty times in a loop, or nest ``range()`` loops
until the machine gives up. This module hooks every place where a template does work:

- the generated code (a code generator subclass) sends every output piece through
  ``environment.emit``, every ``for`` loop's iterable through ``environment.loop_iter``,
  every ``~`` through ``environment.bounded_concat`` and every list/dict/tuple literal through
  ``environment.built``; every include, import and extends is a step;
- every filter is wrapped (:mod:`prompts.bounds`): one step, a check of its arguments before it
  runs for the filters whose result can outgrow their input (``center``, ``indent``,
  ``wordwrap``, ``replace``, ``join``, ``format``, ``batch``, ``slice``, ``round``, ``escape``,
  ``urlencode``, ``tojson``), and a check of its result after; ``range`` and ``lipsum`` are
  bounded versions; ``pprint`` and ``urlize`` are removed (their cost cannot be bounded cheaply,
  and a prompt has no use for them);
- calls (``environment.call``, with ``str`` method arguments checked by
  :func:`prompts.limits.check_method`), the operators ``+ * % **``, slices and ``str.format`` are
  checked the same way;
- compiling refuses templates nested more than ``MAX_NESTING`` levels, and filters never run at
  compile time (jinja folds constant expressions then, outside any budget).

A render opens a :class:`prompts.limits.Budget` in ``Template.render``/``generate``/``make_module``
and every hook charges it. ``tests/test_sandbox.py`` is the proof.
"""

from __future__ import annotations

import functools
import types

from jinja2 import TemplateSyntaxError, nodes
from jinja2.compiler import CodeGenerator
from jinja2.environment import Template
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter, SecurityError
from markupsafe import EscapeFormatter, Markup

from prompts.bounds import REMOVED_FILTERS, bounded_dumps, bounded_filter, bounded_lipsum, bounded_range
from prompts.limits import (
    MAX_INT_BITS,
    MAX_NESTING,
    Budget,
    SandboxLimitError,
    budget_scope,
    check_format_spec,
    check_method,
    check_printf,
    check_result,
    counted,
    current,
    produced,
    size_of,
)


class BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator, with the output, loops, ``~`` and literals routed through the budget."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loop_iterables: dict[int, nodes.Node] = {}  # id -> the iterable node of a `for`

    def visit_For(self, node, frame):
        self.loop_iterables[id(node.iter)] = node.iter
        super().visit_For(node, frame)

    def visit(self, node, *args, **kwargs):
        if self.loop_iterables.get(id(node)) is node:  # every iteration of a loop is a step
            self.write("environment.loop_iter(")
            super().visit(node, *args, **kwargs)
            self.write(")")
        else:
            super().visit(node, *args, **kwargs)

    def _output_const_repr(self, group):
        return f"environment.emit({super()._output_const_repr(group)})"

    def _output_child_pre(self, node, frame, finalize):
        self.write("environment.emit(")
        super()._output_child_pre(node, frame, finalize)

    def _output_child_post(self, node, frame, finalize):
        super()._output_child_post(node, frame, finalize)
        self.write(")")

    def visit_Concat(self, node, frame):
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        else:
            join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
        self.write(f"environment.bounded_concat({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def _built(self, visit, node, frame):
        self.write("environment.built(")
        visit(node, frame)
        self.write(")")

    def visit_List(self, node, frame):
        self._built(super().visit_List, node, frame)

    def visit_Dict(self, node, frame):
        self._built(super().visit_Dict, node, frame)

    def visit_Tuple(self, node, frame):
        if node.ctx == "load":
            self._built(super().visit_Tuple, node, frame)
        else:  # an assignment target: `{% for a, b in ... %}`
            super().visit_Tuple(node, frame)


class BoundedTemplate(Template):
    """A template whose every render runs under one budget."""

    def render(self, *args, **kwargs):
        with budget_scope():
            return super().render(*args, **kwargs)

    def generate(self, *args, **kwargs):
        budget, chunks = Budget(), super().generate(*args, **kwargs)
        while True:
            with budget_scope(budget):  # entered per chunk: two generators may be read in turns
                try:
                    chunk = next(chunks)
                except StopIteration:
                    return
            yield chunk

    def make_module(self, vars=None, shared=False, locals=None):  # noqa: A002 - jinja's names
        with budget_scope():
            return super().make_module(vars, shared, locals)


class BoundedFormatter(SandboxedFormatter):
    """``str.format`` in the sandbox, with each field's width and the whole result bounded."""

    def __init__(self, env, written: int = 0, **kwargs):
        super().__init__(env, **kwargs)
        self.written = written

    def format_field(self, value, format_spec):
        self.written += check_format_spec(format_spec, "str.format()") + size_of(value, "str.format()")
        check_result(self.written, "str.format()")
        return super().format_field(value, format_spec)


class BoundedEscapeFormatter(BoundedFormatter, EscapeFormatter):
    pass


def _finalize(value):
    """Every ``{{ ... }}`` value before it is turned into text: refuse one that would print huge."""
    if not isinstance(value, str):
        size_of(value, "an output value")
    return value


def _is_int(value) -> bool:
    return isinstance(value, int)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with every render bounded in output, value size, steps and time."""

    code_generator_class = BoundedCodeGenerator
    template_class = BoundedTemplate
    intercepted_binops = frozenset(["+", "*", "%", "**"])

    def __init__(self, **kwargs):
        super().__init__(finalize=_finalize, **kwargs)
        self.globals["range"] = bounded_range
        self.globals["lipsum"] = bounded_lipsum
        self.filters = {name: bounded_filter(name, f) for name, f in self.filters.items()
                        if name not in REMOVED_FILTERS}
        self.policies["json.dumps_function"] = bounded_dumps

    def _parse(self, source, name, filename):
        """Parse, refusing templates nested too deeply to compile quickly (``MAX_NESTING``)."""
        try:
            tree = super()._parse(source, name, filename)
        except RecursionError:
            raise TemplateSyntaxError("nested too deeply to parse", 1, name, filename) from None
        stack = [(tree, 1)]
        while stack:
            node, depth = stack.pop()
            if depth > MAX_NESTING:
                raise TemplateSyntaxError(f"nested more than {MAX_NESTING} levels deep (the limit); split it "
                                          "into simpler expressions", node.lineno or 1, name, filename)
            stack.extend((child, depth + 1) for child in node.iter_child_nodes())
        return tree

    def get_template(self, *args, **kwargs):
        """Every ``{% include %}``, ``{% import %}`` and ``{% extends %}`` is a step of the render in progress."""
        budget = current()
        if budget is not None:
            budget.step()
        return super().get_template(*args, **kwargs)

    def select_template(self, *args, **kwargs):
        budget = current()
        if budget is not None:
            budget.step()
        return super().select_template(*args, **kwargs)

    # -- hooks the generated code calls ---------------------------------------------------------
    def emit(self, text: str) -> str:
        budget = current()
        if budget is None:
            raise SecurityError("render templates with render() or generate(), which bound them")
        return budget.emit(text)

    def loop_iter(self, iterable):
        budget = current()
        if budget is None:
            raise SecurityError("render templates with render() or generate(), which bound them")
        return counted(iterable, budget)

    def bounded_concat(self, join, parts):
        budget = current()
        if budget is not None:
            budget.step()
        check_result(sum(size_of(p, "'~'") for p in parts), "'~'")
        return produced(join(parts), "the result of '~'")

    def built(self, value):
        return produced(value, "a list or dict literal")

    # -- the sandbox's own hooks ----------------------------------------------------------------
    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - jinja's signature
        budget = current()
        if budget is not None:
            budget.step()
            if isinstance(__obj, LoopContext) and args:  # a recursive loop's next level
                args = (counted(args[0], budget), *args[1:])
        args = check_method(__obj, args, kwargs)
        name = getattr(__obj, "__name__", type(__obj).__name__)
        return produced(super().call(__context, __obj, *args, **kwargs), f"the result of {name}()")

    def call_binop(self, context, operator, left, right):
        budget = current()
        if budget is not None:
            budget.step()
        what = f"'{operator}'"
        if operator == "*":
            if _is_int(left) and _is_int(right):
                if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                    raise SandboxLimitError(f"{what} result over the limit of {MAX_INT_BITS:,} bits")
            else:
                seq, count = (left, right) if _is_int(right) else (right, left)
                if _is_int(count) and count > 0 and isinstance(seq, (str, bytes, list, tuple)):
                    check_result(size_of(seq, what) * count, what)
        elif operator == "**" and _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
            if right * abs(left).bit_length() > MAX_INT_BITS:
                raise SandboxLimitError(f"{what} result over the limit of {MAX_INT_BITS:,} bits")
        elif operator == "%" and isinstance(left, (str, bytes)):
            check_printf(left, right, what)
        return produced(super().call_binop(context, operator, left, right), f"the result of {what}")

    def getitem(self, obj, argument):
        value = super().getitem(obj, argument)
        return produced(value, "a slice") if isinstance(argument, slice) else value

    def wrap_str_format(self, value):
        if not isinstance(value, (types.MethodType, types.BuiltinMethodType)) \
                or value.__name__ not in ("format", "format_map") or not isinstance(value.__self__, str):
            return None
        f_self, is_map, env = value.__self__, value.__name__ == "format_map", self

        def wrapper(*args, **kwargs):
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one positional argument")
                args, kwargs = (), args[0]
            if isinstance(f_self, Markup):
                formatter = BoundedEscapeFormatter(env, len(f_self), escape=f_self.escape)
            else:
                formatter = BoundedFormatter(env, len(f_self))
            return type(f_self)(formatter.vformat(f_self, args, kwargs))

        return functools.update_wrapper(wrapper, value)
