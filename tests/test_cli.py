"""The command line as users meet it: help, --quiet on every long stage, one-line errors."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from rlaif.cli import app

STAGES = ["generate", "revise", "judge", "judge-eval"]


def test_help_lists_every_area():
    res = CliRunner().invoke(app, ["--help"])
    assert res.exit_code == 0
    for name in ("demo", "constitution", "models", "engine", "generate", "revise", "judge", "judge-eval",
                 "publish", "align", "bench"):
        assert name in res.output, name


@pytest.mark.parametrize("stage", STAGES)
def test_every_long_stage_has_quiet(stage):
    res = CliRunner().invoke(app, [stage, "--help"], terminal_width=200)
    assert res.exit_code == 0 and "--quiet" in res.output


def test_user_errors_are_one_line(tmp_path, run_cli):
    res = run_cli("judge", "--input", tmp_path / "nope", "--out", tmp_path / "o", "--engine", "fake")
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


def test_sigterm_runs_finally_blocks(tmp_path):
    """SIGTERM ends the CLI (or a worker that installed plumbing/signals.py) through SystemExit(143), so engines
    close their vLLM workers on the way out."""
    import signal
    import subprocess
    import sys

    marker = tmp_path / "closed"
    code = (
        "import sys, time\n"
        "from plumbing.signals import exit_on_sigterm\n"
        "exit_on_sigterm()\n"
        "assert 'rlaif' not in sys.modules  # a worker installs it without the CLI\n"
        "try:\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
        "finally:\n"
        f"    open({str(marker)!r}, 'w').write('closed')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert marker.read_text() == "closed"


def test_ctrl_c_says_so_in_one_line_and_the_same_command_resumes(tmp_path):
    """SIGINT mid-stage: exit 130 and the one line ``rlaif.cli.INTERRUPTED`` on stderr (also in the run's log);
    the same command then finishes the run from its whole shards."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import BASE_ENV

    from plumbing.runs import load
    from rlaif.cli import INTERRUPTED

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(f'{{"prompt": "question {i}"}}\n' for i in range(6)))
    out = tmp_path / "gen"
    cmd = [sys.executable, "-m", "rlaif", "generate", "--prompts", str(prompts), "--out", str(out), "--engine", "fake",
           "--batch-size", "1", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**BASE_ENV, "RLAIF_FAKE_DELAY_S": "0.5"})  # 6 shards, one every 0.5 s
    deadline = time.monotonic() + 120
    while not list(out.glob("data/*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-3000:]
    assert stderr == INTERRUPTED + "\n" and stdout == ""
    assert INTERRUPTED in (out / "logs" / "rlaif.log").read_text()
    assert 1 <= len(list(out.glob("data/*.parquet"))) < 6  # interrupted mid-stage

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=BASE_ENV)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = load(out)
    assert len(rows) == 6 and len(set(rows["id"])) == 6  # every prompt once: the whole shards kept, the rest done
