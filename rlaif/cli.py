"""The ``rlaif`` command line. Each command imports lazily, builds a config and calls one function.

Every stage command lives in a ``cli_<area>.py`` module (typer definitions only, heavy imports
inside the commands) and is mounted here. Errors a user can
fix (bad input, missing files, a run of the wrong kind) end in ONE line on stderr and exit
code 2; set ``RLAIF_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import typer

from rlaif import (
    cli_align,
    cli_bench,
    cli_constitution,
    cli_engine,
    cli_generate,
    cli_judge,
    cli_judge_eval,
    cli_models,
)

app = typer.Typer(
    name="rlaif",
    help="Constitutional RLAIF: constitution file -> AI preference data -> aligned models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(cli_constitution.app, name="constitution")
app.add_typer(cli_models.app, name="models")
# Command order in --help follows the pipeline.
for _area in (cli_models, cli_engine, cli_generate, cli_judge, cli_judge_eval, cli_align, cli_bench):
    _area.register(app)


OUR_PACKAGES = {"plumbing", "constitution", "prompts", "generator", "judge", "align", "rlaif"}


def is_user_error(exc: BaseException) -> bool:
    """Errors meaning "the input is wrong", shown as one line rather than a traceback.

    Every exception class our packages define (ConstitutionError, RunError, InputError,
    EngineError, JudgeError, RecipeError, ...) exists to carry a message for the user;
    add to them pydantic validation errors and missing files.
    """
    from pydantic import ValidationError

    if type(exc).__module__.split(".")[0] in OUR_PACKAGES:
        return True
    return isinstance(exc, ValidationError | FileNotFoundError | IsADirectoryError | PermissionError)


def _one_line(exc: BaseException) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ())) or "input"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return f"{exc.title}: {loc}: {first.get('msg')}{more}"
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"{exc.filename}: no such file or folder"
    return " ".join(str(exc).split()) or type(exc).__name__


def exit_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit(143)`` so ``finally`` blocks run: engines shut their vLLM worker
    processes down and run writers keep only whole shards (the default handler kills the process
    on the spot and leaves vLLM's workers behind)."""
    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def main() -> None:
    logging.basicConfig(level=os.environ.get("RLAIF_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    exit_on_sigterm()
    try:
        app()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - narrowed just below
        if os.environ.get("RLAIF_DEBUG") or not is_user_error(exc):
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        sys.exit(2)
