"""Every command, given input it must refuse, refuses it cleanly (the corpus: tests/bad_inputs/cases.py).

Each case runs the real CLI (``python -m rlaif ARGV``) in a fresh folder that is both the working
directory and (next to it) HOME, and must end with:

* exit code 2 and exactly one line on stderr, starting with ``error: `` and holding the expected text;
* no traceback;
* no engine or model built: ``RLAIF_NO_MODEL=1`` turns ``generator.engines.make_engine`` and the
  embedded model's conversion (``generator.models.prepare``) into a crash with a traceback, which
  fails the case; so a refused ``--base-url`` never reached a server either (no connection, no retry);
* within the case's time bound (20 s; 10 s for a bad ``--base-url``) in CPU seconds of the command
  and its children, and in wall seconds stretched by the machine's load (1-minute load average per
  CPU, at least 1), since a shared box slows every process down alike;
* nothing created in the working directory, and every file of the folder byte-identical afterwards
  (sentinel files included, so a command that deletes what it should not is caught).

The cases run as subprocesses in a small thread pool (``RLAIF_BAD_INPUT_WORKERS``, default 3) started
once per session for the cases pytest selected; each parametrised test waits for its own case.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from bad_inputs.builders import Templates
from bad_inputs.cases import CASES, Case, Make

TIMEOUT_S = 120  # a case that runs this long has started real work; it fails on max_s anyway
WORKERS = int(os.environ.get("RLAIF_BAD_INPUT_WORKERS", "3"))
# In every case folder: a user's data next to where an --out "" or "." would write, and in HOME.
SENTINELS = {"cwd/data/keep.parquet": b"PAR1 not really, but the user's\n", "cwd/sentinel.txt": b"keep me\n",
             "home/.config/keep.txt": b"keep me too\n"}


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    seconds: float  # wall clock
    cpu_seconds: float
    stretch: float  # how much a loaded machine stretches wall time: 1-minute load average per CPU, at least 1
    changed: list[str]  # files that were there before and differ or are gone
    created: list[str]  # files or folders in the working directory that were not there before


def _env(home: Path, extra: dict[str, str] | None = None) -> dict:
    """The case's environment: offline, no model, HOME in the case folder; a case's own ``env`` comes last."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLAIF_", "HF_", "XDG_", "TRANSFORMERS_"))}
    env.update(HOME=str(home), RLAIF_NO_MODEL="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", NO_COLOR="1", COLUMNS="200")
    env.update(extra or {})
    return env


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _entries(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _create(case: Case, folder: Path, templates: Templates) -> None:
    for rel, content in SENTINELS.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(content)
    for rel, content in case.files.items():
        path = folder / "cwd" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Make):
            templates.copy(content.kind, path)
        else:
            path.write_bytes(content if isinstance(content, bytes) else content.encode())


def _run(argv: tuple[str, ...], cwd: Path, home: Path, extra_env: dict[str, str] | None = None,
         ) -> tuple[int, str, str, float, float]:
    """(exit code, stdout, stderr, wall seconds, CPU seconds of the command and the processes it waited for).

    The CPU time comes from ``wait4`` on this one child (``getrusage`` would mix the threads' children)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "rlaif", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, cwd=cwd, env=_env(home, extra_env),
                            start_new_session=True)  # its own process group: a timeout ends its workers too
    streams: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda k=k, f=f: streams.__setitem__(k, f.read()))
               for k, f in (("out", proc.stdout), ("err", proc.stderr))]
    for r in readers:
        r.start()
    timer = threading.Timer(TIMEOUT_S, os.killpg, args=(proc.pid, signal.SIGKILL))
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join()
    proc.stdout.close()
    proc.stderr.close()
    err = streams["err"].decode(errors="replace")
    if proc.returncode == -signal.SIGKILL:
        err = f"(killed after {TIMEOUT_S} s) {err}"
    return proc.returncode, streams["out"].decode(errors="replace"), err, time.perf_counter() - start, \
        usage.ru_utime + usage.ru_stime


def run_case(case: Case, folder: Path, templates: Templates) -> Outcome:
    _create(case, folder, templates)
    cwd, home = folder / "cwd", folder / "home"
    before, entries = _hashes(folder), _entries(cwd)
    code, out, err, wall, cpu = _run(case.argv, cwd, home, case.env)
    stretch = max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
    after = _hashes(folder)
    changed = sorted(k for k, v in before.items() if after.get(k) != v)
    created = sorted(_entries(cwd) - entries)
    return Outcome(code, out, err, wall, cpu, stretch, changed, created)


@pytest.fixture(scope="session")
def corpus_runs(request, tmp_path_factory) -> dict[str, Future]:
    """The selected cases, started in a thread pool; case id -> Future[Outcome]."""
    selected = [item.callspec.params["case"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_bad_input" and hasattr(item, "callspec")]
    templates = Templates(tmp_path_factory.mktemp("bad-input-templates"))
    kinds = {c.kind for case in selected for c in case.files.values() if isinstance(c, Make)}
    for kind in sorted(kinds):
        templates.get(kind)  # built here, once, before the threads copy them
    root = tmp_path_factory.mktemp("bad-inputs")
    pool = ThreadPoolExecutor(max_workers=WORKERS)
    futures = {case.id: pool.submit(run_case, case, root / case.id, templates) for case in selected}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


def _params():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    return [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else [])
            for c in CASES]


@pytest.mark.parametrize("case", _params())
def test_bad_input(case: Case, corpus_runs):
    out = corpus_runs[case.id].result()
    shown = f"rlaif {' '.join(case.argv)!s}\nexit {out.returncode} in {out.seconds:.1f} s ({out.cpu_seconds:.1f} CPU s)\nstderr:\n" \
            f"{out.stderr[-3000:]}\nstdout:\n{out.stdout[-1000:]}"
    assert "RLAIF_NO_MODEL" not in out.stderr, f"an engine or model would have been built:\n{shown}"
    assert "Traceback" not in out.stderr, shown
    assert out.returncode == 2, shown
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"not exactly one error line:\n{shown}"
    assert case.expect in lines[0], f"expected {case.expect!r} in the error line:\n{shown}"
    assert out.cpu_seconds < case.max_s, f"used {out.cpu_seconds:.1f} CPU s (bound {case.max_s} s):\n{shown}"
    assert out.seconds < case.max_s * out.stretch, \
        f"took {out.seconds:.1f} s (bound {case.max_s} s x load stretch {out.stretch:.1f}):\n{shown}"
    assert not out.changed, f"files changed or removed: {out.changed}\n{shown}"
    assert not out.created, f"files or folders created: {out.created}\n{shown}"


def test_corpus_covers_every_command():
    """At least 60 cases, and every command of the CLI appears in some case."""
    from typer.main import get_command

    from rlaif.cli import app

    def leaves(cmd, prefix=()):
        subs = getattr(cmd, "commands", None)
        if not subs:
            return [prefix]
        return [leaf for name, sub in subs.items() for leaf in leaves(sub, (*prefix, name))]

    commands = leaves(get_command(app))
    covered = {leaf for leaf in commands for case in CASES if case.argv[:len(leaf)] == leaf}
    missing = sorted(" ".join(leaf) for leaf in set(commands) - covered)
    assert len(CASES) >= 60
    assert missing == [] or set(missing) <= ALLOWED_UNCOVERED, missing


# Commands with no input that could be bad.
ALLOWED_UNCOVERED = {"models list"}
