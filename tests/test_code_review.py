"""Hostile programs against the code reward (align/rewards/code.py) beyond tests/test_code_forgery.py:
what the sandbox lets a program read, what its output costs the trusted parent, and a correct
program the parent fails where Python passes it."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path

import pytest

from align.rewards import get_reward
from align.rewards.sandbox import Limits, sandbox_unavailable

pytestmark = pytest.mark.skipif(sandbox_unavailable() is not None, reason=str(sandbox_unavailable()))

REPO = Path(__file__).resolve().parents[1]
LIMITS = Limits(cpu_s=2, wall_s=3.0, memory_mb=256, nproc=16, file_mb=1, nofile=64)
ROWS = [{"text": "Write a function f that doubles x.", "test_list": ["assert f(2) == 4", "assert f(5) == 10"]},
        {"text": "Write a function g that reverses a string.", "test_list": ['assert g("ab") == "ba"']},
        {"text": "Write a function h that sums a list.", "test_list": ["assert h([1, 2, 3]) == 6"]}]

# Computes nothing: walks the run directories the sandbox can see, unpacks the snappy pages of
# each parquet shard by trying every offset (stdlib only, as under python -I -S), and answers
# each call with the literal its assert expects.
HARVEST = r'''
import ast, os, re
ROOT, NAME, ANSWERS = %r, %r, {}
PAT = re.compile(rb"assert\s+" + NAME.encode() + rb"\(([ -~]{0,200}?)\)\s*==\s*([ -~]{1,200})")
def unsnappy(buf, pos):
    n = shift = 0
    while True:
        b = buf[pos]; pos += 1; n |= (b & 0x7F) << shift; shift += 7
        if b < 0x80 or shift > 28:
            break
    if not 16 < n < 1 << 22:
        return None
    out = bytearray()
    while len(out) < n:
        tag = buf[pos]; pos += 1; kind = tag & 3
        if kind == 0:
            ln = tag >> 2
            if ln >= 60:
                ln = int.from_bytes(buf[pos:pos + ln - 59], "little"); pos += tag // 4 - 59
            out += buf[pos:pos + ln + 1]; pos += ln + 1
            continue
        if kind == 1:
            ln, off = 4 + ((tag >> 2) & 7), ((tag >> 5) << 8) | buf[pos]; pos += 1
        else:
            k = 2 if kind == 2 else 4
            ln, off = 1 + (tag >> 2), int.from_bytes(buf[pos:pos + k], "little"); pos += k
        if not 0 < off <= len(out):
            return None
        for _ in range(ln):
            out.append(out[-off])
    return bytes(out) if len(out) == n else None
def harvest(data):
    for args, want in PAT.findall(data):
        try:
            key = repr(ast.literal_eval("(" + args.decode() + ",)"))
        except Exception:
            continue
        for end in range(len(want), 0, -1):
            try:
                ANSWERS[key] = ast.literal_eval(want[:end].decode()); break
            except Exception:
                continue
for top, dirs, files in os.walk(ROOT):
    for name in files:
        if name.endswith(".parquet"):
            data = open(os.path.join(top, name), "rb").read()
            for i in range(len(data)):
                try:
                    block = unsnappy(data, i)
                except IndexError:
                    continue
                if block and b"assert" in block:
                    harvest(block)
globals()[NAME] = lambda *args: ANSWERS.get(repr(args))
'''


@pytest.fixture
def run_dir(tmp_path):
    """A code run written by the project's own import (`rlaif data mbpp FILE --out runs/...`)."""
    from tasks.build import import_task

    source = tmp_path / "mbpp.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    out = REPO / "runs" / f"test-code-review-{uuid.uuid4().hex[:12]}"
    try:
        import_task(source, out, "code")
        yield out
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.mark.parametrize("row", range(len(ROWS)))
def test_a_program_cannot_read_the_runs_tests_from_disk(run_dir, row):
    """The sandbox hides /tmp, /root and a few more, but the rest of the host's files are readable:
    the run directory GRPO trains on holds every assert with its expected literal."""
    tests = ROWS[row]["test_list"]
    name = tests[0].split()[1].split("(")[0]
    res = get_reward("code").results(None, [HARVEST % (str(run_dir.parent), name)], tests=[tests],
                                     limits=LIMITS)[0]
    assert res.score == 0.0, res


def test_a_returned_set_does_not_stall_the_parent():
    """~200 bytes of program, 25,000 ints of one hash (multiples of 2**61 - 1) as the set of call 0:
    the parent's decode builds the set in quadratic time, outside every limit of the sandbox."""
    program = ("import os, sys\nM = (1 << 61) - 1\n"
               "items = ','.join('[\"i\",\"%x\"]' % (k * M) for k in range(1, 25000))\n"
               "os.write(int(sys.argv[2]), ('[\"call\",0,\"value\",[\"S\",[' + items + ']]]\\n').encode())\n"
               "os._exit(0)\n")
    t0 = time.monotonic()
    res = get_reward("code").results(None, [program], tests=[["assert f(2) == {4}"]], limits=LIMITS)[0]
    assert res.score == 0.0, res
    assert time.monotonic() - t0 < 6.0, f"the parent spent {time.monotonic() - t0:.1f} s on one run"


@pytest.mark.parametrize("body", ["return (i for i in range(n))", "return map(int, range(n))",
                                  "return {i: 0 for i in range(n)}.keys()"])
def test_an_iterator_under_sorted_passes_as_in_python(body):
    """`assert sorted(threeSum([...])) == [...]` (MBPP): Python sorts whatever iterable the function
    returns; the reward asks the child for the iterable itself, which is not plain data."""
    program = f"def f(n):\n    {body}\n"
    namespace: dict = {}
    exec(program + "assert sorted(f(3)) == [0, 1, 2]\n", namespace)  # Python: holds
    res = get_reward("code").results(None, [program], tests=[["assert sorted(f(3)) == [0, 1, 2]"]],
                                     limits=LIMITS)[0]
    assert (res.score, res.status) == (1.0, "pass"), res


@pytest.mark.parametrize(("body", "test"), [
    ("return collections.namedtuple('P', 'a b')(n, n)", "assert f(3) == (3, 3)"),
    ("return range(n)", "assert len(f(3)) == 3"),
    ("return {i: 0 for i in range(n)}.keys()", "assert set(f(3)) == {0, 1, 2}"),
    ("return (i for i in range(n))", "assert sorted(f(3), reverse=True) == [2, 1, 0]"),
    ("return zip(range(n), 'abc')", "assert dict(f(3)) == {0: 'a', 1: 'b', 2: 'c'}"),
])
def test_values_python_compares_pass_as_in_python(body, test):
    """A namedtuple is a tuple; a range has a len; a dict_keys, a generator, a zip go through set,
    sorted and dict in Python. Each was 'not plain data' before."""
    program = f"import collections\ndef f(n):\n    {body}\n"
    exec(program + test + "\n", {})  # Python: holds
    res = get_reward("code").results(None, [program], tests=[[test]], limits=LIMITS)[0]
    assert (res.score, res.status) == (1.0, "pass"), res
