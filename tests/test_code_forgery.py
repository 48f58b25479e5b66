"""Programs that try to make the code reward (align/rewards/code.py) say 1.0 without computing the
answers. Each gets 0.0 (fail / error / violation / timeout), never 1.0, and a correct program
still gets 1.0. Only the reward's public face is used (``results``), so the same file runs
against any version of the reward; the first four pass (1.0) on the nonce-checked harness that
ran the asserts inside the sandbox, which is why the verdict moved to the parent."""

from __future__ import annotations

import pytest

from align.rewards import get_reward
from align.rewards.sandbox import Limits, sandbox_unavailable

pytestmark = pytest.mark.skipif(sandbox_unavailable() is not None, reason=str(sandbox_unavailable()))

LIMITS = Limits(cpu_s=2, wall_s=3.0, memory_mb=256, nproc=16, file_mb=1, nofile=64)
TESTS = ["assert f(2) == 4", "assert f(5) == 10"]
CORRECT = "def f(x):\n    return 2 * x\n"
WRONG = "def f(x):\n    return x + 1\n"
_RESULT_FD = "import os, sys\nfd = int(sys.argv[2])\n"  # the result fd the harness was handed

FORGERIES = {
    # name: (program, statuses it may get)
    # An object equal to everything: `assert f(2) == 4` calls its __eq__.
    "eq_always_true": ("class Yes:\n    def __eq__(self, other):\n        return True\n    __hash__ = None\n"
                       "def f(x):\n    return Yes()\n", {"error"}),
    # The harness's frame holds the nonce it appends for a pass: read it, write the pass line.
    "frame_reads_nonce": ("import os, sys\nframe = sys._getframe(1)\nnonce = frame.f_locals['nonce'].decode()\n"
                          "os.write(frame.f_globals['_result_fd'], ('pass ' + nonce + '\\n').encode())\n"
                          "os._exit(0)\n", {"error"}),
    # Search every frame for the asserts' text and answer from it.
    "memory_scan_for_expected": (
        "import re, sys\nseen, answers = set(), {}\n"
        "def scan(v, depth):\n"
        "    if depth > 4 or id(v) in seen:\n        return\n    seen.add(id(v))\n"
        "    if isinstance(v, str):\n"
        "        for a, b in re.findall(r'f\\((\\d+)\\)\\s*==\\s*(\\d+)', v):\n            answers[int(a)] = int(b)\n"
        "    elif isinstance(v, dict):\n        for w in list(v.values()):\n            scan(w, depth + 1)\n"
        "    elif isinstance(v, (list, tuple)):\n        for w in v:\n            scan(w, depth + 1)\n"
        "frame = sys._getframe()\nwhile frame is not None:\n"
        "    scan(dict(frame.f_locals), 0)\n    scan(dict(frame.f_globals), 0)\n    frame = frame.f_back\n"
        "def f(x):\n    return answers.get(x)\n", {"fail"}),
    "int_subclass_eq": ("class Num(int):\n    def __eq__(self, other):\n        return True\n"
                        "    __hash__ = int.__hash__\n"
                        "def f(x):\n    return Num(0)\n", {"error"}),
    # A dict that says it equals everything is sent as what it holds: {} != 4.
    "dict_subclass_eq": ("class Liar(dict):\n    def __eq__(self, other):\n        return True\n"
                         "    __hash__ = None\n"
                         "def f(x):\n    return Liar()\n", {"fail"}),
    "os_exit_in_first_call": ("import os\ndef f(x):\n    os._exit(0)\n", {"error"}),
    "system_exit_in_function": ("def f(x):\n    raise SystemExit(0)\n", {"error"}),
    # Made-up records and sentinels on stdout: the verdict never reads stdout.
    "fake_records_on_stdout": ("print('pass 00000000000000000000000000000000')\n"
                               "print('[\"call\", 0, \"value\", [\"i\", \"4\"]]')\n"
                               "print('[\"call\", 1, \"value\", [\"i\", \"a\"]]')\n" + WRONG, {"fail"}),
    "patch_json_and_builtins": ("import builtins, json\n"
                                "json.dumps = lambda *a, **k: '[\"call\", 0, \"value\", [\"b\", true]]'\n"
                                "builtins.isinstance = lambda *a: True\nbuiltins.bool = lambda *a: True\n"
                                "builtins.type = lambda *a: int\n"
                                "def f(x):\n    return object()\n", {"error", "violation", "fail"}),
    # Replace every function of the running harness by one that reports a value.
    "patch_harness_module": ("import __main__\n"
                             "for name, value in list(vars(__main__).items()):\n"
                             "    if callable(value) and not isinstance(value, type):\n"
                             "        setattr(__main__, name, lambda *a, **k: ['value', ['b', True]])\n"
                             + WRONG, {"error", "violation", "fail"}),
    # Records for every call, written straight to the result fd, then a clean exit.
    "fake_records_on_result_fd": (_RESULT_FD + "for i in range(2):\n"
                                  "    os.write(fd, ('[\"call\", %d, \"value\", [\"b\", true]]\\n' % i).encode())\n"
                                  "os._exit(0)\n", {"fail"}),
    # Fake records first, then the harness's own: a second record for call 0 is a violation.
    "fake_records_then_harness": (_RESULT_FD + "os.write(fd, b'[\"call\", 0, \"value\", [\"b\", true]]\\n')\n"
                                  + CORRECT, {"violation"}),
    "program_record_says_pass": (_RESULT_FD + "os.write(fd, b'[\"program\", \"pass\", \"all tests passed\"]\\n')\n"
                                 "os._exit(0)\n", {"violation"}),
    "deeply_nested_json_on_result_fd": (_RESULT_FD + "os.write(fd, b'[' * 200000 + b'\\n')\nos._exit(0)\n",
                                        {"violation"}),
    "atexit_writes_pass": (_RESULT_FD + "import atexit\n"
                           "atexit.register(lambda: os.write(fd, b'[\"call\", 0, \"value\", [\"b\", true]]\\n'))\n"
                           "sys.exit(0)\n", {"error"}),
    "nan": ("def f(x):\n    return float('nan')\n", {"fail"}),
    "huge_return": ("def f(x):\n    return [x] * 300000\n", {"violation", "error", "timeout"}),
    "self_containing_list": ("def f(x):\n    box = []\n    box.append(box)\n    return box\n", {"error"}),
    # The forked child computes the right answer; only the first process may report.
    "fork_answers_in_child": ("import os\ndef f(x):\n    return 2 * x if os.fork() == 0 else x + 1\n", {"fail"}),
    "exit_status_over_128": ("import os\nos._exit(200)\n", {"error"}),
}


def _score(program: str, tests=TESTS):
    return get_reward("code").results(None, [program], tests=[tests], limits=LIMITS)[0]


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forgery_gets_no_pass(name):
    program, statuses = FORGERIES[name]
    res = _score(program)
    assert res.score == 0.0 and res.status in statuses, res


def test_correct_program_still_passes():
    for program in (CORRECT, "import re\nprint('[\"call\", 0]')\n" + CORRECT):
        res = _score(program)
        assert (res.score, res.status) == (1.0, "pass"), res


def test_truth_tests_take_any_truthy_value_but_nothing_else():
    """`assert f(x)` holds for a re.Match as in Python; `assert not f(x)` for None."""
    program = "import re\ndef f(s):\n    return re.fullmatch('a+', s)\n"
    assert _score(program, ["assert f('aaa')", "assert not f('ab')"]).score == 1.0
    assert _score(program, ["assert f('ab')"]).score == 0.0
    assert _score(program, ["assert f('aaa') == True"]).status == "error"  # == needs plain data


def test_a_builtin_the_test_means_cannot_be_redefined():
    """`f(1) == max([1, 2])` compares with whatever the program calls max: no verdict, never 1.0."""
    res = _score("def max(*a):\n    return 0\ndef f(x):\n    return 0\n", ["assert f(1) == max([1, 2])"])
    assert (res.score, res.status) == (None, "unverifiable"), res
