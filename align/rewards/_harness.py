"""Runs INSIDE the code sandbox (align/rewards/sandbox.py) as ``python -I -S -c <this source>``.

The fd named by argv[1] holds the run's nonce (written by the parent, read here and closed before
any program code runs); the fd named by argv[2] is the result file. The program (``solution.py``) and then each test
(``test_<i>.py``) run in one namespace; the tests see a pristine copy of the builtins taken
before the program ran, and are compiled with ``optimize=0`` so ``assert`` is always kept.
Only when every test has returned does this harness append the nonce to the result fd and exit 0:
the parent counts a pass only for that nonce AND exit status 0, so ``sys.exit(0)``,
``os._exit(0)``, patched builtins, or printing a made-up sentinel do not pass
(tests/test_sandbox_code.py). A status line (``fail``/``error``/``violation``) is written for
the other outcomes; it only classifies a failure, it can never make one a pass.
"""

import builtins
import errno
import os
import sys

_write, _exit, _close, _read = os.write, os._exit, os.close, os.read
_result_fd = int(sys.argv[2])
_pristine = dict(builtins.__dict__)
_AssertionError, _SystemExit, _MemoryError, _RecursionError = AssertionError, SystemExit, MemoryError, RecursionError
_OSError, _PermissionError, _BaseException = OSError, PermissionError, BaseException
_NET = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED, errno.EADDRNOTAVAIL, errno.ENETDOWN}
_repr, _type, _str, _getpid, _main_pid = repr, type, str, os.getpid, os.getpid()


def _flush():
    for stream in (sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except _BaseException as exc:  # the program closed its own stdout: note it, the verdict stands
            _write(2, ("harness: flush failed: " + _repr(exc) + "\n").encode())


def _report(status, reason):
    _flush()
    try:
        _write(_result_fd, (status + " " + reason.replace("\n", " ")[:400] + "\n").encode("utf-8", "replace"))
    except _BaseException:
        _exit(1)  # result fd closed or replaced by the program: no verdict line, never a pass
    _exit(0 if status == "pass" else 1)


def _classify(exc):
    name = _type(exc).__name__
    if isinstance(exc, _AssertionError):
        return "fail", "assertion failed: " + _str(exc)[:200]
    if isinstance(exc, _MemoryError):
        return "violation", "memory limit (MemoryError)"
    if isinstance(exc, _RecursionError):
        return "error", "RecursionError: " + _str(exc)[:200]
    if isinstance(exc, _PermissionError):
        return "violation", "permission denied: " + _str(exc)[:200]
    if isinstance(exc, _OSError) and exc.errno in _NET:
        return "violation", "network unreachable: " + _str(exc)[:200]
    if isinstance(exc, _OSError) and exc.errno == errno.EFBIG:
        return "violation", "file size limit: " + _str(exc)[:200]
    if isinstance(exc, _OSError) and exc.errno == errno.EAGAIN:
        return "violation", "process limit: " + _str(exc)[:200]
    return "error", name + ": " + _str(exc)[:200]


def _main():
    nonce = _read(int(sys.argv[1]), 128)  # a local, never a module global the program could import
    _close(int(sys.argv[1]))
    with open("solution.py", encoding="utf-8") as fh:
        solution = fh.read()
    tests = []
    i = 0
    while os.path.exists(f"test_{i}.py"):
        with open(f"test_{i}.py", encoding="utf-8") as fh:
            tests.append((f"test_{i}.py", fh.read()))
        i += 1
    compiled_tests = [compile(src, name, "exec", optimize=0, dont_inherit=True) for name, src in tests]
    namespace = {"__name__": "__sandbox__", "__builtins__": builtins}
    try:
        exec(compile(solution, "solution.py", "exec", dont_inherit=True), namespace)
    except _SystemExit as exc:
        _report("error", "the program exited before the tests ran (SystemExit " + _repr(exc.code) + ")")
    except _BaseException as exc:
        _report(*_classify(exc))
    test_ns = dict(namespace)
    test_ns["__builtins__"] = dict(_pristine)
    for code in compiled_tests:
        try:
            exec(code, test_ns)
        except _SystemExit as exc:
            _report("error", "exited inside the tests (SystemExit " + _repr(exc.code) + ")")
        except _BaseException as exc:
            _report(*_classify(exc))
    if _getpid() != _main_pid:
        _report("error", "a forked child reached the end of the tests")
    _report("pass", nonce.decode("ascii", "replace"))


_main()
