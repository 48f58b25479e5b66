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
    """SIGTERM ends the CLI through SystemExit(143), so engines close their vLLM workers on the way out."""
    import signal
    import subprocess
    import sys

    marker = tmp_path / "closed"
    code = (
        "import sys, time\n"
        "from rlaif.cli import exit_on_sigterm\n"
        "exit_on_sigterm()\n"
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
