"""Runs INSIDE the code sandbox (align/rewards/sandbox.py) as ``python -I -S -c <this source> PLAN_FD RESULT_FD``,
and is imported by the trusted parent for the one codec both sides share (``encode``/``decode``).

The child is told only which functions to call with which arguments: the fd PLAN_FD holds
``[[name, [arg, ...], [[keyword, arg], ...], truth, wrap, [[keyword, arg], ...]], ...]``
(``marshal``, from the trusted parent; arguments in the tagged encoding below; ``wrap`` and its
keywords as in ``finish``), read and decoded before any program code runs.
The program (``solution.py``) runs, then each call in order; for each, one line goes to
RESULT_FD: ``["call", i, "value", <tagged return value>]`` or ``["call", i, "failed", status,
reason]``; a program that raises before the calls gives one ``["program", status, reason]`` line.

Nothing here decides a verdict. The expected values never enter this process: the parent
(align/rewards/code.py) compares the decoded values with the literals of each assert itself.
Since the program shares this process it can rewrite anything here or write any line to
RESULT_FD; what it writes can only claim a return value, which it could have returned anyway.

The encoding accepts plain data only, by exact type (``type(x) is int``, not ``isinstance``):
None, bool, int, float, complex, str, bytes, list, tuple, set, frozenset, nested at most
``MAX_DEPTH`` deep, and the builtin types themselves (an argument ``int``). Dicts and tuples are
the exceptions: a dict of any class (``Counter``, ``defaultdict``, which compare with a dict literal
as dicts) is sent as the dict it holds, read with ``dict.items``, and a tuple of any class (a
``namedtuple``, which equals the plain tuple of its fields) as the tuple it holds, read with
``tuple.__iter__``, so no override in its class is asked. An object with its own ``__eq__``, a
subclass of ``int``, a generator, a self-containing list: the call fails
(tests/test_code_forgery.py, tests/test_code_checks.py). A call whose value the assert only tests
for truth (``assert f(x)``, ``assert not f(x)``) sends ``bool(value)``, which the program could
have returned itself, so a ``re.Match`` passes there as in Python. Likewise a call the assert
hands straight to one of ``APPLIED`` (``sorted(f(x)) == [...]``) sends the builtin's result, so a
generator or a ``dict_keys`` is sorted as Python sorts it; the parent applies the builtin again
(each is idempotent on its own result) or, for ``len``, takes only a non-negative int, so what the
child sends is again what the program could have returned (tests/test_code_review.py).

``decode`` bounds the trusted parent's work on what the child wrote: at most ``MAX_VALUES`` values
in one return value, and at most ``MAX_SAME_HASH`` distinct hashable values of one hash anywhere in
it, checked before any set or dict is built. Ints hash by value (``hash(k * (2**61 - 1)) == 0``),
so a set of 25,000 such ints made ``set()`` in the parent quadratic (14 s for one run); a list of
them would do the same to a ``set(f(x))`` in the assert, hence the check over every value.
"""

import builtins
import errno
import marshal
import os
import sys

# The C half of json: importing json itself (which imports re) cost a run ~50 ms more on the shared box.
from _json import encode_basestring_ascii

MAX_DEPTH = 100
MAX_VALUES = 250_000  # values in one return value; a 1 MB result line holds at most ~110,000
MAX_SAME_HASH = 16  # distinct values sharing one hash; plain data that is not made to collide has 1, rarely 2
_SEQ = {list: "l", tuple: "t", set: "S", frozenset: "F"}
_BUILD = {"l": list, "t": tuple, "S": set, "F": frozenset}
# Builtin types as values (``remove_datatype((4, 7.7), int)``), by name.
TYPES = {t.__name__: t for t in (int, float, complex, bool, str, bytes, list, tuple, set, frozenset, dict)}
# Builtins an assert may apply straight to a call (``sorted(f(x))``): the child applies them to the
# return value, whatever it is, and sends the plain result.
APPLIED = ("sorted", "list", "tuple", "set", "frozenset", "dict", "len")


def encode(value, depth=0, budget=None):
    """Plain data -> a JSON-able ``[tag, payload...]``; TypeError/ValueError for anything else."""
    kind = type(value)
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    budget = [MAX_VALUES] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError(f"more than {MAX_VALUES} values")
    if value is None:
        return ["N"]
    if kind is bool:
        return ["b", value]
    if kind is int:
        return ["i", format(value, "x")]  # hex: no 4300-digit limit on str(int)
    if kind is float:
        return ["f", float.__repr__(value)]  # exact round trip, and 'nan'/'inf'
    if kind is complex:
        return ["c", float.__repr__(value.real), float.__repr__(value.imag)]
    if kind is str:
        return ["s", value]
    if kind is bytes:
        return ["y", value.hex()]
    if kind in _SEQ:
        return [_SEQ[kind], [encode(v, depth + 1, budget) for v in value]]
    if issubclass(kind, tuple):  # tuple.__iter__ reads what a namedtuple holds; no override is asked
        return ["t", [encode(v, depth + 1, budget) for v in tuple.__iter__(value)]]
    if issubclass(kind, dict):  # dict.items reads what it holds; no override of a Counter is asked
        return ["d", [[encode(k, depth + 1, budget), encode(v, depth + 1, budget)] for k, v in dict.items(value)]]
    if kind is type and any(value is t for t in TYPES.values()):
        return ["T", value.__name__]
    raise TypeError(f"a {kind.__name__} is not plain data")


def decode(tagged):
    """The inverse of ``encode``; ValueError for anything ``encode`` cannot have written, and for a
    value past the bounds above (``MAX_VALUES``, ``MAX_SAME_HASH``)."""
    hashable = []
    value = _decode(tagged, 0, [MAX_VALUES], hashable)
    _few_per_hash(hashable)
    return value


def _decode(tagged, depth, budget, hashable):
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError(f"more than {MAX_VALUES} values")
    if type(tagged) is not list or not tagged or type(tagged[0]) is not str:
        raise ValueError(f"not a tagged value: {str(tagged)[:60]}")
    tag, rest = tagged[0], tagged[1:]
    if tag == "N" and not rest:
        return None
    if len(rest) == 1 and tag == "b" and type(rest[0]) is bool:
        return rest[0]
    if len(rest) == 1 and tag in "ifsy" and type(rest[0]) is str:
        value = {"i": lambda s: int(s, 16), "f": float, "s": str, "y": bytes.fromhex}[tag](rest[0])
    elif len(rest) == 1 and tag == "T" and type(rest[0]) is str and rest[0] in TYPES:
        value = TYPES[rest[0]]
    elif len(rest) == 2 and tag == "c" and all(type(p) is str for p in rest):
        value = complex(float(rest[0]), float(rest[1]))
    elif len(rest) == 1 and tag in _BUILD and type(rest[0]) is list:
        members = [_decode(v, depth + 1, budget, hashable) for v in rest[0]]
        if tag in "SF":
            _few_per_hash(members)  # before the set is built, which is what the bound protects
        value = _build(_BUILD[tag], members)
        if tag in "lS":
            return value  # unhashable
    elif len(rest) == 1 and tag == "d" and type(rest[0]) is list:
        pairs = rest[0]
        if not all(type(p) is list and len(p) == 2 for p in pairs):
            raise ValueError("a dict entry is not a [key, value] pair")
        keys = [_decode(k, depth + 1, budget, hashable) for k, _ in pairs]
        values = [_decode(v, depth + 1, budget, hashable) for _, v in pairs]
        _few_per_hash(keys)
        return _build(dict, zip(keys, values, strict=True))
    else:
        raise ValueError(f"not a tagged value: {str(tagged)[:60]}")
    hashable.append(value)  # a tuple holding a list is not; _few_per_hash skips it
    return value


def _build(kind, members):
    try:
        return kind(members)
    except TypeError as exc:  # an unhashable member of a set, or key of a dict
        raise ValueError(str(exc)) from None


def _few_per_hash(values):
    """ValueError when more than ``MAX_SAME_HASH`` distinct ``values`` share one hash. Sorting the
    (hash, position) pairs compares ints only; equality is asked only within one hash, of at most
    ``MAX_SAME_HASH`` + 1 distinct values per member, so the check is O(n log n + n * MAX_SAME_HASH)."""
    keyed = []
    for i, value in enumerate(values):
        try:
            keyed.append((hash(value), i))
        except TypeError:  # a tuple holding a list: no set or dict can hold it
            continue
    keyed.sort()
    start = 0
    while start < len(keyed):
        end = start
        while end < len(keyed) and keyed[end][0] == keyed[start][0]:
            end += 1
        distinct = []
        for _, i in keyed[start:end]:
            if not any(values[i] == seen for seen in distinct):
                distinct.append(values[i])
                if len(distinct) > MAX_SAME_HASH:
                    raise ValueError(f"more than {MAX_SAME_HASH} distinct values share the hash {keyed[start][0]}")
        start = end


_NET = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED, errno.EADDRNOTAVAIL, errno.ENETDOWN}


def _text(exc):
    try:
        return str(exc)[:200]
    except BaseException:  # the program's exception cannot print itself: its class name is enough
        return "(unprintable)"


def _classify(exc):
    """(status, reason) of an exception: a failure's kind, never a verdict."""
    if isinstance(exc, MemoryError):
        return "violation", "memory limit (MemoryError)"
    if isinstance(exc, PermissionError):
        return "violation", "permission denied: " + _text(exc)
    if isinstance(exc, OSError) and exc.errno in _NET:
        return "violation", "network unreachable: " + _text(exc)
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return "violation", "file size limit: " + _text(exc)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "violation", "disk limit: " + _text(exc)
    if isinstance(exc, OSError) and exc.errno == errno.EAGAIN:
        return "violation", "process limit: " + _text(exc)
    if isinstance(exc, SystemExit):
        return "error", "SystemExit " + _text(exc.code)
    return "error", type(exc).__name__ + ": " + _text(exc)


def dump(record):
    """JSON text of a record (lists, str, bool, int) without the json module; the parent reads it with json."""
    kind = type(record)
    if kind is str:
        return encode_basestring_ascii(record)
    if kind is bool:
        return "true" if record else "false"
    if kind is int:
        return int.__repr__(record)
    return "[" + ",".join([dump(r) for r in record]) + "]"


def finish(value, wrap, wrap_kwargs, truth, builtin):
    """What the child sends for a return value: ``builtin(wrap)`` applied when the assert hands the
    call straight to one of ``APPLIED``, ``bool`` when it only tests the value for truth."""
    if wrap:
        if wrap not in APPLIED:
            raise ValueError(f"{wrap} is not applied in the sandbox")
        value = builtin(wrap)(value, **wrap_kwargs)
    return builtin("bool")(value) if truth else value


def _call(namespace, pristine, name, args, kwargs, truth, wrap, wrap_kwargs):
    """``["value", tagged]`` or ``["failed", status, reason]`` for one call of the program's ``name``."""
    if name not in namespace:  # never a builtin of that name: the parent means the program's function
        return ["failed", "error", f"NameError: the program defines no '{name}'"]
    try:
        value = finish(namespace[name](*args, **kwargs), wrap, wrap_kwargs, truth, pristine.__getitem__)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt included: the call failed
        return ["failed", *_classify(exc)]
    try:
        return ["value", encode(value)]
    except (TypeError, ValueError, RecursionError, MemoryError) as exc:
        status = "violation" if isinstance(exc, MemoryError) else "error"
        return ["failed", status, f"{name} returned a value that is not plain data: {_text(exc)}"]


def _main():
    write, exit_, getpid = os.write, os._exit, os.getpid
    main_pid, result_fd = getpid(), int(sys.argv[2])
    with open(int(sys.argv[1]), "rb") as fh:  # decoded before the program can patch what decode uses
        calls = [(name, [decode(a) for a in args], {k: decode(v) for k, v in kwargs}, truth, wrap,
                  {k: decode(v) for k, v in wrap_kwargs})
                 for name, args, kwargs, truth, wrap, wrap_kwargs in marshal.loads(fh.read())]
    pristine = dict(builtins.__dict__)

    def emit(record):
        for stream in (sys.__stdout__, sys.__stderr__):  # the program's prints land before the verdict
            try:
                stream.flush()
            except BaseException as exc:  # the program closed its own stdout: noted, nothing else
                write(2, ("harness: flush failed: " + _text(exc) + "\n").encode())
        try:
            write(result_fd, (dump(record) + "\n").encode())
        except BaseException:
            exit_(1)  # the result fd is gone: fewer lines than calls, which the parent counts as an error

    namespace = {"__name__": "__sandbox__", "__builtins__": builtins}
    try:
        with open("solution.py", encoding="utf-8") as fh:
            exec(compile(fh.read(), "solution.py", "exec", dont_inherit=True), namespace)
    except BaseException as exc:
        emit(["program", *_classify(exc)])
        exit_(1)
    for i, call in enumerate(calls):
        outcome = _call(namespace, pristine, *call)
        if getpid() != main_pid:
            exit_(1)  # a forked child returned into the harness: only the first process reports
        emit(["call", i, *outcome])
    exit_(0)


if __name__ == "__main__":
    _main()
