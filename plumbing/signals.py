"""Signals turned into ordinary Python exits, so that a process running a stage ends through its ``finally``
blocks: engines shut their vLLM worker processes down, and run writers keep only whole shards.

The command line installs it first thing (rlaif/cli.py ``main``); a process that runs stages without the
command line (a job worker) calls ``exit_on_sigterm()`` from its main thread before it starts the work
(tests/test_cli.py::test_sigterm_runs_finally_blocks runs it in a process that never imports ``rlaif``).
SIGINT needs nothing: Python raises ``KeyboardInterrupt`` already.
"""

from __future__ import annotations

import signal


def exit_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit(143)`` (128 + the signal number, the shell's convention) so ``finally``
    blocks run; the default handler kills the process on the spot and leaves vLLM's workers behind. A
    second SIGTERM, while the first is still unwinding, ends the process at once. Main thread only
    (Python delivers signals there; ``signal.signal`` raises ``ValueError`` elsewhere)."""
    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
