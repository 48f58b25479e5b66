"""The trusted half of the code reward, without a sandbox: which assert forms parse (MBPP's, quoted
from its test lists), which have no verdict, how the parent evaluates an assert on returned plain
data (checked against Python itself on a grid of values), the codec both sides share, and how
the parent reads the child's result file."""

from __future__ import annotations

import builtins
import collections
import math
import time

import pytest

from align.rewards import _harness, get_reward
from align.rewards.code import Plan, UnverifiableTest, judge, parse_tests
from align.rewards.sandbox import Call, Limits, Returned, RunResult, _verdict

# --- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(("tests", "calls"), [
    (["assert min_cost([[1, 2, 3], [4, 8, 2], [1, 5, 3]], 2, 2) == 8"],
     [Call("min_cost", ([[1, 2, 3], [4, 8, 2], [1, 5, 3]], 2, 2), {})]),
    (["assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))"],
     [Call("similar_elements", ((3, 4, 5, 6), (5, 7, 4, 10)), {}, wrap="set")]),
    (["assert sorted(f([3, 1]), reverse=True) == [3, 1]", "assert len(g(2)) == 2"],
     [Call("f", ([3, 1],), {}, wrap="sorted", wrap_kwargs=(("reverse", True),)), Call("g", (2,), {}, wrap="len")]),
    (["import math", "assert math.isclose(volume_sphere(10), 4188.790204786391, rel_tol=0.001)"],
     [Call("volume_sphere", (10,), {})]),
    (['assert check_str("annie")', 'assert not check_str("dawood")'],
     [Call("check_str", ("annie",), {}, True), Call("check_str", ("dawood",), {}, True)]),
    (["assert remove_datatype((4, 5, 4, 7.7, 1.2), int) == [7.7, 1.2]"],
     [Call("remove_datatype", ((4, 5, 4, 7.7, 1.2), int), {})]),
    (["assert angle_complex(0,1j)==1.5707963267948966", "assert find_first_duplicate([1, 2, 3, 4])==-1"],
     [Call("angle_complex", (0, 1j), {}), Call("find_first_duplicate", ([1, 2, 3, 4],), {})]),
    (["assert abs(area(r=2) - 12.566) < 1e-3"], [Call("area", (), {"r": 2})]),
    (["assert sum(10,15) == 6"], [Call("sum", (10, 15), {})]),  # MBPP 126 names its function sum
])
def test_mbpp_forms_parse_into_calls(tests, calls):
    plan = parse_tests(tests)
    assert list(plan.calls) == calls
    assert [type(a) for a in plan.calls[0].args] == [type(a) for a in calls[0].args]


@pytest.mark.parametrize(("tests", "reason"), [
    (["assert f(1) =="], "test 0 is not Python"),
    (["x = f(1)\nassert x == 2"], "mixes asserts with other statements"),
    (["assert 1 == 1"], "calls no function of the program"),
    (["import math"], "hold no assert"),
    (["root = Node(1)", "assert is_tree_balanced(root) == False"], "the name 'root'"),
    (["class Pair:\n    pass", "assert Pair(1, 2) == 3"], "defined by the test's setup code"),
    (["assert max_chain_length([Pair(5, 24)], 4) == 3"], "an argument of max_chain_length calls a function"),
    (['assert tuple_size(("A", 1)) == sys.getsizeof(("A", 1))'], "does not evaluate: sys.getsizeof"),
    (["assert f(1) is 1"], "'is' against something other than None/True/False"),
    (["assert f(*[1, 2]) == 3"], "unpacks"),
    (["assert f(lambda x: x) == 3"], "does not evaluate: lambda"),
    (["assert f(1) == [x for x in (1, 2)]"], "does not evaluate"),
    (["assert f(1 / 0) == 3"], "not plain data"),
    (["assert f(...) == 3"], "not plain data"),
    (["assert f(1) == max([1, 2])"], "the tests call the builtin max beside the program's f"),
    (["assert f(" + "-" * 5000 + "1) == 1"], "nested too deeply"),
])
def test_forms_without_a_safe_check_are_unverifiable(tests, reason):
    with pytest.raises(UnverifiableTest, match=reason.replace("(", r"\(").replace("*", r"\*")):
        parse_tests(tests)


def test_unverifiable_tests_score_none_without_running():
    res = get_reward("code").results(None, ["def f(x):\n    return 1\n"], tests=[["assert 1 == 1"]],
                                     limits=Limits())[0]
    assert (res.score, res.status) == (None, "unverifiable") and "calls no function" in res.reason


# --- judging on returned values ---------------------------------------------------------------

VALUES = [4, 4.0, True, False, 0, (4,), [4], {4}, frozenset({4}), "4", b"4", None, float("nan"), 4 + 0j,
          {4: 4}, [[4]], (), 10 ** 30, -0.0, "", [4, 5]]
ASSERTS = ["assert f(2) == 4", "assert 4 == f(2)", "assert f(2) != 4", "assert f(2)", "assert not f(2)",
           "assert f(2) == (4,)", "assert f(2) == [4]", "assert set(f(2)) == {4}", "assert f(2) in [4, 5]",
           "assert 4 in f(2)", "assert abs(f(2) - 4) < 1e-9", "assert math.isclose(f(2), 4.0, rel_tol=0.001)",
           "assert sorted(f(2)) == [4]", "assert f(2) is None", "assert f(2) is not None", "assert len(f(2)) == 1",
           "assert f(2) == {4: 4}", "assert f(2)[0] == 4", "assert f(2) and f(2) == 4", "assert str(f(2)) == '4'",
           "assert round(f(2), 1) == 4.0", "assert 3 < f(2) <= 4", "assert tuple(f(2)) == (4, 5)"]


def _python(source: str, value) -> str:
    """What Python itself says: pass, fail (AssertionError) or error (the assert raised)."""
    try:
        exec(source, {"f": lambda x: value, "math": math})
    except AssertionError:
        return "fail"
    except Exception:
        return "error"
    return "pass"


def _sent(call: Call, value) -> Returned:
    """What the child sends for ``value`` (align/rewards/_harness.py ``finish``)."""
    try:
        return Returned("value", _harness.finish(value, call.wrap, dict(call.wrap_kwargs), call.truth,
                                                 vars(builtins).__getitem__))
    except Exception as exc:
        return Returned("error", reason=f"{type(exc).__name__}: {exc}")


def _judged(source: str, *values) -> RunResult:
    plan = parse_tests([source])
    returned = tuple(_sent(c, v) for c, v in zip(plan.calls, values, strict=True))
    return judge(plan, RunResult("returned", "", 0, 0.1, calls=returned))


@pytest.mark.parametrize("source", ASSERTS)
def test_the_parent_judges_as_python_does(source):
    for value in VALUES:
        n_calls = len(parse_tests([source]).calls)
        assert _judged(source, *[value] * n_calls).status == _python(source, value), (source, value)


def test_hand_worked_verdicts_and_reasons():
    assert _judged("assert f(2) == [1, 2]", (1, 2)).reason == \
        "assertion failed: assert f(2) == [1, 2] (f(2) returned (1, 2))"
    assert _judged("assert f(1) == 0.3", 0.1 + 0.2).status == "fail"  # floats as Python compares them
    assert _judged("assert set(f(1)) == {(1,)}", [[1]]).reason == "set(f(1)) failed: TypeError: unhashable type: 'list'"
    assert _judged("assert set(f(1)) == {(1,)}", [(1,)]).status == "pass"
    plan = parse_tests(["assert f(1) == 1", "assert f(2) == 2"])
    failed = judge(plan, RunResult("returned", "", 0, 0.1, calls=(
        Returned("value", 1), Returned("violation", reason="memory limit (MemoryError)"))))
    assert (failed.status, failed.reason) == ("violation", "f(2) failed: memory limit (MemoryError)")
    timeout = RunResult("timeout", "wall clock", None, 3.0)
    assert judge(plan, timeout) is timeout
    assert isinstance(plan, Plan)


# --- the codec ----------------------------------------------------------------------------------

ROUND_TRIP = [None, True, False, 0, -255, 10 ** 5000, 1.5, -0.0, math.inf, 1e-300, 2 - 3j, "", "é\udc80\n",
              b"\x00\xff", [1, [2, (3,)]], (), (1, "a"), {1, (2, 3)}, frozenset({frozenset({1})}),
              {(1, 2): [3], "k": {"n": None}}, int, dict, [int, str]]


def _shape(value):
    """Value and exact types, all the way down (1 == True == 1.0 would hide a lost type)."""
    if isinstance(value, list | tuple):
        return type(value), [_shape(v) for v in value]
    if isinstance(value, set | frozenset):
        return type(value), sorted(map(repr, value))
    if isinstance(value, dict):
        return type(value), sorted((repr(_shape(k)), repr(_shape(v))) for k, v in value.items())
    return type(value), repr(value) if not isinstance(value, int) else value


@pytest.mark.parametrize("value", ROUND_TRIP, ids=lambda v: type(v).__name__)
def test_codec_round_trips_plain_data_exactly(value):
    import json

    back = _harness.decode(json.loads(json.dumps(_harness.encode(value))))
    assert _shape(back) == _shape(value)
    assert math.isnan(_harness.decode(_harness.encode(math.nan)))


def test_dicts_of_any_class_travel_as_the_dict_they_hold():
    counts = collections.Counter("abca")
    collections.Counter.items = lambda self: [("forged", 1)]  # an override the encoder must not ask
    try:
        assert _harness.decode(_harness.encode(counts)) == {"a": 2, "b": 1, "c": 1}
    finally:
        del collections.Counter.items
    assert type(_harness.decode(_harness.encode(collections.defaultdict(list, a=[1])))) is dict
    liar = type("Liar", (dict,), {"__eq__": lambda self, other: True, "items": lambda self: [("k", 4)]})(a=1)
    assert _harness.decode(_harness.encode(liar)) == {"a": 1} != {"k": 4}  # what it holds, not what it says


class _Num(int):
    def __eq__(self, other):
        return True

    __hash__ = int.__hash__


def _deep(n):
    value = []
    for _ in range(n):
        value = [value]
    return value


def _loop():
    box = []
    box.append(box)
    return box


@pytest.mark.parametrize("value", [_Num(1), object(), (x for x in ()), _loop(), _deep(101), range(3),
                                   type("L", (list,), {})(), [1, _Num(2)], {1: object()}, object, 3 .__add__])
def test_codec_refuses_what_is_not_plain_data(value):
    with pytest.raises((TypeError, ValueError)):
        _harness.encode(value)


def test_a_tuple_of_any_class_travels_as_the_tuple_it_holds():
    """A namedtuple equals the plain tuple of its fields in Python; an override in its class is not asked."""
    point = collections.namedtuple("Point", "x y")(3, 3)
    assert _harness.encode(point) == _harness.encode((3, 3)) and type(_harness.decode(_harness.encode(point))) is tuple
    liar = type("Liar", (tuple,), {"__eq__": lambda self, other: True, "__iter__": lambda self: iter((9,))})((1, 2))
    assert _harness.decode(_harness.encode(liar)) == (1, 2)


_M61 = (1 << 61) - 1  # ints hash modulo this prime: every k * _M61 hashes to 0


@pytest.mark.parametrize("tag", ["l", "S", "t", "F"])
def test_decode_refuses_many_values_of_one_hash_without_hashing_them_together(tag):
    """25,000 distinct ints of one hash: a set of them took the parent 14 s to build, and a list of them
    the same in an assert's set(f(x)). Refused in well under a second, before any set is built."""
    tagged = [tag, [["i", format(k * _M61, "x")] for k in range(1, 25_000)]]
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="share the hash 0"):
        _harness.decode(tagged)
    assert time.monotonic() - t0 < 1.0


def test_decode_bounds_keep_ordinary_values():
    """Equal values share a hash without limit; 16 distinct ones of one hash are still plain data."""
    assert _harness.decode(_harness.encode([0] * 50_000 + [(1, 2)] * 1000)) == [0] * 50_000 + [(1, 2)] * 1000
    assert len(_harness.decode(_harness.encode({k * _M61 for k in range(16)}))) == 16
    with pytest.raises(ValueError, match="share the hash"):  # dict keys, and values nested anywhere
        _harness.decode(_harness.encode({k * _M61: 0 for k in range(17)}))
    with pytest.raises(ValueError, match="share the hash"):
        _harness.decode(_harness.encode([[(k * _M61,)] for k in range(17)]))
    for side in (_harness.encode, _harness.decode):
        with pytest.raises(ValueError, match="more than 250000 values"):
            side(["l", [["N"]] * 250_000] if side is _harness.decode else [None] * 250_000)


def test_a_len_the_child_sends_must_be_one_len_can_give():
    """`len(f(x))` is applied in the child; what comes back must be an int >= 0 (a list of that
    length would have given it), else the call is a violation."""
    plan = parse_tests(["assert len(f(1)) == 3"])
    for claimed, status in ((3, "pass"), (2, "fail"), ([1, 2, 3], "violation"), (-3, "violation"),
                            (True, "violation"), (3.0, "violation")):
        run = judge(plan, RunResult("returned", "", 0, 0.1, calls=(Returned("value", claimed),)))
        assert run.status == status, (claimed, run)


@pytest.mark.parametrize("tagged", [["S", [["l", []]]], ["x"], ["i", 5], ["i", "zz"], ["b", 1], ["N", 1],
                                    ["d", [["s", "k"]]], ["T", "object"], ["l", ["i", "1"]], "s", [],
                                    _deep(300)])
def test_codec_decode_refuses_what_encode_cannot_write(tagged):
    with pytest.raises(ValueError):
        _harness.decode(tagged)


# --- the parent reading the child's result file -----------------------------------------------

GOOD = '["call", 0, "value", ["i", "4"]]\n["call", 1, "failed", "error", "ZeroDivisionError: x"]\n'


@pytest.mark.parametrize(("text", "rc", "status", "reason"), [
    (GOOD, 0, "returned", "2 calls returned or failed"),
    (GOOD, 1, "error", "exited with status 1 after its calls"),
    (GOOD.split("\n")[0] + "\n", 0, "error", "exited with status 0 after 1 of 2 calls"),
    ("", 200, "error", "exited with status 200 after 0 of 2 calls"),
    ("", 139, "error", "killed by SIGSEGV after 0 of 2 calls"),
    ("", 153, "violation", "output or file over 1 MB (SIGXFSZ)"),
    ('["program", "error", "NameError: x"]\n', 1, "error", "the program raised before the calls: NameError: x"),
    ('["program", "pass", "x"]\n', 0, "violation", "line 1 is not the record of call 0"),
    (GOOD + GOOD, 0, "violation", "line 3 is not the record of call 2"),
    ('["call", 1, "value", ["b", true]]\n', 0, "violation", "line 1 is not the record of call 0"),
    ('["call", false, "value", ["b", true]]\n', 0, "violation", "line 1 is not the record of call 0"),
    ('["call", 0, "passed"]\n', 0, "violation", "neither a value nor a failure"),
    ('["call", 0, "failed", "pass", "x"]\n', 0, "violation", "neither a value nor a failure"),
    ('["call", 0, "value", ["S", [["l", []]]]]\n', 0, "violation", "unhashable"),
    ("[" * 100000 + "\n", 0, "violation", "line 1 is not JSON"),
    ('["call", 0, "value", ["i", "4"]]', 0, "violation", "the last line is unterminated"),
    ("pass 0123\n", 0, "violation", "line 1 is not JSON"),
])
def test_result_file_is_read_strictly(text, rc, status, reason):
    got, why, returned = _verdict(rc, False, 0.1, text, 2, Limits())
    assert (got, reason in why) == (status, True), why
    if status == "returned":
        assert returned == (Returned("value", 4), Returned("error", reason="ZeroDivisionError: x"))
