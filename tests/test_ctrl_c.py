"""Two Ctrl-C in a row: the second one, pressed while the command restores the console and waits for
its child processes' last log lines (plumbing/capture.py, ``Capture.close``), cuts that wait short instead of
raising ``KeyboardInterrupt`` inside it (which printed a traceback after the one-line message)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

from conftest import BASE_ENV

# An engine whose child process keeps the command's stdout and stderr open (as vLLM's workers do), so
# the restorer waits for it: up to plumbing.capture.DRAIN_SECONDS.
HOLDING_ENGINE = '''\
import subprocess
import sys

from generator.engines.fake import FakeEngine


class HoldingEngine(FakeEngine):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
'''


def test_a_second_ctrl_c_while_the_log_is_restored_ends_without_a_traceback(tmp_path):
    from plumbing.capture import DRAIN_SECONDS

    (tmp_path / "holding.py").write_text(HOLDING_ENGINE)
    (tmp_path / "p.jsonl").write_text('{"prompt": "question"}\n')
    proc = subprocess.Popen([sys.executable, "-m", "rlaif", "generate", "--prompts", "p.jsonl", "--out", "gen",
                             "--engine", "holding:HoldingEngine", "--quiet"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**BASE_ENV, "RLAIF_FAKE_DELAY_S": "60"})  # the engine's first call sleeps
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr))
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "gen" / "logs").is_dir() and time.monotonic() < deadline:  # the stage has started
            time.sleep(0.05)
        time.sleep(1.0)  # inside the engine's first (sleeping) call
        proc.send_signal(signal.SIGINT)
        while not lines and time.monotonic() < deadline:  # the one line is out: the restorer now waits
            time.sleep(0.05)
        time.sleep(0.5)
        second = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
        waited = time.monotonic() - second
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(timeout=10)
    stderr = "".join(lines)
    assert code == 128 + signal.SIGINT, stderr[-3000:]
    assert "Traceback" not in stderr and len(lines) == 1, stderr[-3000:]
    assert waited < DRAIN_SECONDS - 1, f"the second Ctrl-C did not cut the wait ({waited:.1f} s)"
