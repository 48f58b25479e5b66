"""Code reward: the completion's program (its last fenced ```python block, else the whole text)
against the row's ``tests`` column (Python asserts, MBPP style: a string or a list of strings;
Austin et al., arXiv 2108.07732). 1.0 when every assert holds, 0.0 for fail / timeout / error /
violation, None when there is no verdict: the sandbox could not run, or a test has a form this
module cannot check safely (the reason says which).

The verdict is decided here, in the trusted process, from plain data. ``parse_tests`` reads each
assert with ``ast``: the calls of the program's functions in it, with arguments that are literals
(``ast.literal_eval`` forms plus the few pure builtins of ``WRAPPERS``), become the only thing the
sandbox is told (align/rewards/sandbox.py ``run_calls``); the rest of the assert (the expected
literal, ``==``/``!=``/``<``/``in``/``is None``, ``not``, ``set(...)``/``sorted(...)``,
``math.isclose(..., rel_tol=...)``, ``abs(a - b) < tol``) is evaluated here on the decoded return
values, with Python's own operators on plain data, so the rules are Python's ``==``. A call handed
straight to ``sorted``/``set``/``list``/``tuple``/``frozenset``/``dict``/``len`` gets that builtin
applied in the child (``_harness.APPLIED``), so a generator or a ``dict_keys`` passes as it does in
Python (tests/test_code_review.py); a namedtuple travels as its tuple. The program's
process never holds an expected value, a nonce or anything else that could produce a pass: an
object whose ``__eq__`` is always True is not plain data, and reading the harness's frames finds
only the arguments (tests/test_code_forgery.py). A program that writes the right return values
to the result file instead of returning them has computed them; that is the one thing it can fake.

A test string with no assert is MBPP's ``test_setup_code`` (tasks/build.py puts it first); it is
not run, and an assert that uses a name it defines (``Node(1)``) has no verdict. Programs of one
call run in parallel up to the CPU count (``sandbox.run_many``).
"""

from __future__ import annotations

import ast
import builtins
import math
import re
import reprlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from align.rewards._harness import APPLIED, TYPES, encode
from align.rewards.base import RewardResult, column, completion_text, scores
from align.rewards.sandbox import Call, Limits, Returned, RunResult, run_many

_FENCE = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
# Pure builtins an assert may apply to a return value or a literal; they run here, on plain data.
WRAPPERS = {f.__name__: f for f in (set, frozenset, sorted, list, tuple, dict, round, abs, len, str, int,
                                    float, bool)}
_ISCLOSE = "math.isclose"
_CALL = "call:"  # the placeholder name of call i ("call:3"): not an identifier, so no source can write it
_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: a / b}
_CMPOPS = {ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b, ast.Lt: lambda a, b: a < b,
           ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b,
           ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
           ast.Is: lambda a, b: a is b, ast.IsNot: lambda a, b: a is not b}
_SINGLETONS = (None, True, False)


class UnverifiableTest(ValueError):
    """A test whose form cannot be checked from plain data; the message says which and why."""


@dataclass(frozen=True)
class Plan:
    """What a row's tests ask: the calls the sandbox makes, and each assert (its source, and its
    expression with call i replaced by the name ``call:i``) that is evaluated here afterwards."""

    calls: tuple[Call, ...]
    checks: tuple[tuple[str, ast.expr], ...]


def extract_program(text: str) -> str:
    """The last fenced python block, else the whole text."""
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else text


def _is_call_of_program(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id not in WRAPPERS


class _Calls(ast.NodeTransformer):
    """Replaces each call of a program function by ``call:i`` and records it with its literal arguments.
    A call handed straight to a builtin of ``APPLIED`` (``sorted(f(x))``) is recorded with that
    builtin, which the child applies to whatever ``f`` returns (a generator, a ``dict_keys``); the
    assert keeps the builtin (idempotent on its result), except ``len``, whose result replaces it."""

    def __init__(self, calls: list[Call], reserved: set[str], truth: ast.AST | None):
        self.calls, self.reserved, self.truth = calls, reserved, truth

    def visit_Call(self, node: ast.Call) -> ast.AST:
        if _applies_to_a_call(node):
            wrap = node.func.id
            kwargs = tuple((k.arg, _argument(wrap, k.value)) for k in node.keywords)
            placeholder = self._record(node.args[0], wrap, kwargs)
            if wrap == "len":
                return ast.copy_location(placeholder, node)
            node.args[0] = placeholder
            return node
        if not _is_call_of_program(node):
            return self.generic_visit(node)
        return self._record(node)

    def _record(self, node: ast.Call, wrap: str = "", wrap_kwargs: tuple = ()) -> ast.Name:
        name = node.func.id
        if name in self.reserved:
            raise UnverifiableTest(f"'{name}' is defined by the test's setup code, not by the program")
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            raise UnverifiableTest(f"the call of {name} unpacks * or ** arguments")
        args = tuple(_argument(name, a) for a in node.args)
        kwargs = {k.arg: _argument(name, k.value) for k in node.keywords}
        self.calls.append(Call(name, args, kwargs, truth=node is self.truth, wrap=wrap, wrap_kwargs=wrap_kwargs))
        return ast.copy_location(ast.Name(id=f"{_CALL}{len(self.calls) - 1}", ctx=ast.Load()), node)


def _applies_to_a_call(node: ast.AST) -> bool:
    """``sorted(f(x))``, ``len(f(x))`` ...: one of APPLIED with the program's call as its only
    positional argument (keywords, ``reverse=True``, must be literals like any argument)."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in APPLIED
            and len(node.args) == 1 and _is_call_of_program(node.args[0])
            and all(k.arg is not None for k in node.keywords))


def _argument(name: str, node: ast.expr) -> Any:
    """An argument's value, computed here: it must be a literal (or WRAPPERS of literals) of plain data."""
    if any(_is_call_of_program(n) for n in ast.walk(node)):
        raise UnverifiableTest(f"an argument of {name} calls a function: {ast.unparse(node)[:80]}")
    _check_form(node)
    try:
        value = _eval(node, ())
        encode(value)
    except Exception as exc:  # a literal Python cannot build (1/0), or a value that is not plain data
        raise UnverifiableTest(f"an argument of {name} is not plain data: {ast.unparse(node)[:80]} ({exc})") from None
    return value


def _setup_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
    return names - {"math"}


def parse_tests(tests: Sequence[str]) -> Plan:
    """The plan of a row's tests; UnverifiableTest names the first test that cannot be checked."""
    try:
        plan = _plan(tests)
    except RecursionError:
        raise UnverifiableTest("a test is nested too deeply to check") from None
    names = {c.name for c in plan.calls}
    shadowed = sorted(n for n in names if hasattr(builtins, n))
    if shadowed and len(names) > 1:  # f(1) == max([1, 2]): the program could define max itself
        raise UnverifiableTest(f"the tests call the builtin {shadowed[0]} beside the program's "
                               f"{sorted(names - set(shadowed))[0]}; only a row that calls nothing else "
                               "may take a builtin's name for the program's function")
    return plan


def _plan(tests: Sequence[str]) -> Plan:
    trees = []
    for i, source in enumerate(tests):
        try:
            trees.append((i, ast.parse(source)))
        except SyntaxError as exc:
            raise UnverifiableTest(f"test {i} is not Python: {exc.msg} (line {exc.lineno})") from None
    asserts = [(i, t) for i, t in trees if any(isinstance(s, ast.Assert) for s in t.body)]
    setup = [t for _, t in trees if not any(isinstance(s, ast.Assert) for s in t.body)]
    reserved = set().union(*map(_setup_names, setup))
    calls: list[Call] = []
    checks = []
    for i, tree in asserts:
        for stmt in tree.body:
            if not isinstance(stmt, ast.Assert):
                raise UnverifiableTest(f"test {i} mixes asserts with other statements ({type(stmt).__name__})")
            before, text, truth = len(calls), ast.unparse(stmt), stmt.test
            while isinstance(truth, ast.UnaryOp) and isinstance(truth.op, ast.Not):
                truth = truth.operand  # assert f(x) / assert not f(x): only bool(f(x)) matters
            expr = _Calls(calls, reserved, truth).visit(stmt.test)
            if len(calls) == before:
                raise UnverifiableTest(f"test {i} calls no function of the program: {text[:80]}")
            _check_form(expr)
            checks.append((text, expr))
    if not checks:
        raise UnverifiableTest("the tests hold no assert")
    return Plan(tuple(calls), tuple(checks))


def _check_form(node: ast.AST) -> None:
    """UnverifiableTest unless ``node`` is built only from the forms ``_eval`` computes."""
    kids: list = []
    if isinstance(node, ast.Constant):
        pass
    elif isinstance(node, ast.Name):
        if not node.id.startswith(_CALL) and node.id not in TYPES:
            raise UnverifiableTest(f"an assert uses the name '{node.id}', which is neither a literal nor a call")
    elif isinstance(node, ast.List | ast.Tuple | ast.Set) and not any(isinstance(e, ast.Starred) for e in node.elts):
        kids = node.elts
    elif isinstance(node, ast.Dict) and None not in node.keys:
        kids = [*node.keys, *node.values]
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub | ast.UAdd):
        kids = [node.operand]
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        kids = [node.left, node.right]
    elif isinstance(node, ast.BoolOp):
        kids = node.values
    elif isinstance(node, ast.Compare) and all(type(op) in _CMPOPS for op in node.ops):
        sides = [node.left, *node.comparators]
        for k, op in enumerate(node.ops):  # identity means something on plain data only for the singletons
            if isinstance(op, ast.Is | ast.IsNot) and not any(
                    isinstance(s, ast.Constant) and any(s.value is v for v in _SINGLETONS) for s in sides[k:k + 2]):
                raise UnverifiableTest(f"'is' against something other than None/True/False: {ast.unparse(node)[:80]}")
        kids = sides
    elif isinstance(node, ast.Call) and _callee(node) is not None and not any(
            isinstance(a, ast.Starred) for a in node.args) and all(k.arg for k in node.keywords):
        kids = [*node.args, *(k.value for k in node.keywords)]
    elif isinstance(node, ast.Subscript):
        kids = [node.value, node.slice]
    elif isinstance(node, ast.Slice):
        kids = [k for k in (node.lower, node.upper, node.step) if k is not None]
    else:
        raise UnverifiableTest(f"an assert uses a form this checker does not evaluate: {ast.unparse(node)[:80]}")
    for kid in kids:
        _check_form(kid)


def _callee(node: ast.Call):
    if isinstance(node.func, ast.Name):
        return WRAPPERS.get(node.func.id)
    return math.isclose if ast.unparse(node.func) == _ISCLOSE else None


class _CallFailed(Exception):
    def __init__(self, index: int, returned: Returned):
        super().__init__(returned.reason)
        self.index, self.returned = index, returned


def _number(value: Any) -> Any:
    if type(value) not in (int, float, complex, bool):
        raise TypeError(f"arithmetic in a test applies to numbers only, not to a {type(value).__name__}")
    return value


def _eval(node: ast.AST, returned: Sequence[Returned]) -> Any:
    """The value of a checked expression, with ``call:i`` read from ``returned`` (plain data)."""
    ev = lambda n: _eval(n, returned)  # noqa: E731
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in TYPES:
        return TYPES[node.id]
    if isinstance(node, ast.Name):
        index = int(node.id[len(_CALL):])
        if returned[index].status != "value":
            raise _CallFailed(index, returned[index])
        return returned[index].value
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](ev(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return {ev(k): ev(v) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, ast.UnaryOp):
        operand = ev(node.operand)
        return not operand if isinstance(node.op, ast.Not) else (-_number(operand) if isinstance(node.op, ast.USub)
                                                                 else +_number(operand))
    if isinstance(node, ast.BinOp):
        return _BINOPS[type(node.op)](_number(ev(node.left)), _number(ev(node.right)))
    if isinstance(node, ast.BoolOp):
        value = None
        for part in node.values:  # Python's short circuit: and -> first falsy, or -> first truthy
            value = ev(part)
            if bool(value) != isinstance(node.op, ast.And):
                return value
        return value
    if isinstance(node, ast.Compare):
        left = ev(node.left)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = ev(right_node)
            if not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Call):
        return _callee(node)(*[ev(a) for a in node.args], **{k.arg: ev(k.value) for k in node.keywords})
    if isinstance(node, ast.Subscript):
        return ev(node.value)[ev(node.slice)]
    if isinstance(node, ast.Slice):
        return slice(*(None if k is None else ev(k) for k in (node.lower, node.upper, node.step)))
    raise UnverifiableTest(f"no evaluation for {type(node).__name__}")  # _check_form lets none through


def _shown(value: Any) -> str:
    try:
        return reprlib.repr(value)
    except ValueError:  # an int past str()'s digit limit
        return f"<a {type(value).__name__} too large to show>"


def _call_text(call: Call) -> str:
    shown = [*map(_shown, call.args), *(f"{k}={_shown(v)}" for k, v in call.kwargs.items())]
    text = f"{'bool of ' if call.truth else ''}{call.name}({', '.join(shown)})"
    if call.wrap:
        text = f"{call.wrap}({', '.join([text, *(f'{k}={_shown(v)}' for k, v in call.wrap_kwargs)])})"
    return text


def _lengths_checked(plan: Plan, returned: Sequence[Returned]) -> tuple[Returned, ...]:
    """A ``len`` the child applied must be what ``len`` gives, an int >= 0; the other builtins of
    APPLIED the assert applies again here."""
    return tuple(r if c.wrap != "len" or r.status != "value" or (type(r.value) is int and r.value >= 0)
                 else Returned("violation", reason=f"len gave {_shown(r.value)}, which no len gives")
                 for c, r in zip(plan.calls, returned, strict=True))


def judge(plan: Plan, run: RunResult) -> RunResult:
    """pass / fail / error from the returned values, each assert evaluated here in test order; any
    other run status (timeout, violation, sandbox_error ...) is kept as it came."""
    if run.status != "returned":
        return run
    run = replace(run, calls=_lengths_checked(plan, run.calls))
    for source, expr in plan.checks:
        try:
            holds = bool(_eval(expr, run.calls))
        except _CallFailed as failed:
            return replace(run, status=failed.returned.status,
                           reason=f"{_call_text(plan.calls[failed.index])} failed: {failed.returned.reason}")
        except Exception as exc:  # what the assert itself would raise on these values (set of lists ...)
            return replace(run, status="error", reason=f"{source[:120]}: {type(exc).__name__}: {str(exc)[:200]}")
        if not holds:
            got = "; ".join(f"{_call_text(plan.calls[int(n.id[len(_CALL):])])} returned "
                            f"{_shown(run.calls[int(n.id[len(_CALL):])].value)}"
                            for n in ast.walk(expr)
                            if isinstance(n, ast.Name) and n.id.startswith(_CALL)
                            and run.calls[int(n.id[len(_CALL):])].status == "value")
            return replace(run, status="fail", reason=f"assertion failed: {source[:120]} ({got[:300]})")
    return replace(run, status="pass", reason="all tests passed")


def to_result(run: RunResult) -> RewardResult:
    score = None if run.status in ("sandbox_error", "unverifiable") else (1.0 if run.status == "pass" else 0.0)
    return RewardResult(score, run.status, run.reason, raw=run)


def _tests(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(t, str) for t in value):
        return list(value)
    raise TypeError(f"code reward: 'tests' must be a string or a list of strings, got {type(value).__name__}")


def run_tests_many(jobs: Sequence[tuple[str, Sequence[str]]], limits: Limits = Limits(),
                   max_workers: int | None = None) -> list[RunResult]:
    """Each (program, tests) judged, in parallel up to ``max_workers`` (default: the CPU count): the
    sandbox runs only rows whose tests parse; the others are ``unverifiable`` with the reason."""
    plans: list[Plan | str] = []
    for _, tests in jobs:
        try:
            plans.append(parse_tests(tests))
        except UnverifiableTest as exc:
            plans.append(str(exc))
    runs = iter(run_many([(program, p.calls) for (program, _), p in zip(jobs, plans, strict=True)
                          if isinstance(p, Plan)], limits, max_workers))
    return [judge(p, next(runs)) if isinstance(p, Plan) else RunResult("unverifiable", p, None, 0.0)
            for p in plans]


def run_tests(program: str, tests: Sequence[str], limits: Limits = Limits()) -> RunResult:
    """``program`` against ``tests`` (assert sources): pass / fail / timeout / error / violation,
    or unverifiable / sandbox_error (no verdict)."""
    return run_tests_many([(program, tests)], limits)[0]


def results(prompts, completions, *, limits: Limits = Limits(), **columns) -> list[RewardResult]:
    tests = [_tests(t) for t in column(columns, "tests", len(completions), "code")]
    jobs = [(extract_program(completion_text(c)), t) for c, t in zip(completions, tests, strict=True) if t]
    runs = iter(run_tests_many(jobs, limits))
    # A row without tests has nothing to verify: no verdict, never a free pass.
    return [to_result(next(runs)) if t else RewardResult(None, "no_tests", "the row's 'tests' is empty")
            for t in tests]


def code_reward(prompts, completions, **columns) -> list[float | None]:
    return scores(results(prompts, completions, **columns))


code_reward.results = results
