"""The ``rlaif`` command line. Each command imports lazily, builds a config and calls one function.

Every command lives in the module named as the command (``rlaif revise`` -> rlaif/revise.py: typer
definitions only, heavy imports inside the command) and is mounted here (``COMMANDS``). Errors a user can
fix (bad input, missing files, a run of the wrong kind) end in ONE line on stderr and exit
code 2; set ``RLAIF_DEBUG=1`` to see the traceback instead. Nothing shown passes without ``redact``:
a Hub token or a secret environment value never reaches the console (tests/test_secrets.py).

The libraries' own output (vLLM, transformers, datasets) goes to the run's log file, not the
console; ``rlaif --verbose CMD`` shows it too (``plumbing/capture.py``).

Ctrl-C ends every command with exit code 130 and the one line ``INTERRUPTED`` on stderr: every stage
keeps only whole shards and resumes from them (tests/test_cli.py).
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import traceback

import typer

from plumbing import capture as logs
from plumbing.capture import OUR_PACKAGES, redact
from plumbing.signals import exit_on_sigterm

INTERRUPTED = "interrupted; re-run the same command to resume"

app = typer.Typer(
    name="rlaif",
    help="Constitutional RLAIF: constitution file -> AI preference data -> aligned models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# One module per command, named as the command (``rlaif judge-eval`` -> rlaif/judge_eval.py); each defines
# ``register(app)``. The order here is the order of --help: the pipeline's.
COMMANDS = ("models", "engine", "generate", "revise", "judge", "judge-eval", "publish", "data", "align", "eval",
            "run", "demo", "serve", "jobs", "constitution", "bench")
for _name in COMMANDS:
    importlib.import_module(f"rlaif.{_name.replace('-', '_')}").register(app)
for _info in app.registered_commands:
    if logs.LOGGED_COMMANDS.get(_info.name):  # commands whose folder is not a run directory of their own
        _info.callback = logs.log_into(logs.LOGGED_COMMANDS[_info.name], _info.callback)


@app.callback()
def _root(ctx: typer.Context,
          verbose: bool = typer.Option(False, "--verbose", "-v", envvar="RLAIF_VERBOSE",
                                       help="Show the libraries' logs (vLLM, transformers, ...) on stderr too; "
                                            "they always go to <out>/logs/rlaif.log.")) -> None:
    """Constitutional RLAIF: constitution file -> AI preference data -> aligned models."""
    logs.configure(ctx.invoked_subcommand, verbose)


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
    """The error as one line, with any Hub token or secret environment value masked (a message may
    quote a server's reply or a file's content: the last line of defence)."""
    return redact(_describe(exc))


def _describe(exc: BaseException) -> str:
    from pydantic import ValidationError

    from plumbing.errors import option_line

    if isinstance(exc, ValidationError):  # a command's config fields are its options: the option is named
        return option_line(exc, secret=_looks_like_token)  # a token pasted into an option is not repeated
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"{exc.filename}: no such file or folder"
    return " ".join(str(exc).split()) or type(exc).__name__


def _looks_like_token(text: str) -> bool:
    from generator.engines.options import looks_like_token

    return looks_like_token(text)


def _fail(message: str, code: int) -> None:
    _say_and_exit(f"error: {message}", code)


def _say_and_exit(line: str, code: int) -> None:
    print(line, file=sys.stderr)
    logs.note(line)
    sys.exit(code)


def _run_app() -> None:
    """The app in click's non-standalone mode, so that a usage error (a missing argument, ``--seed x``)
    is one ``error:`` line like every other refusal rather than a framed usage box."""
    from typer._click import exceptions as click  # typer ships its own click

    try:
        code = app(standalone_mode=False)
    except click.NoArgsIsHelpError as e:  # a bare group: its help, as click would show it
        typer.echo(e.ctx.get_help() if e.ctx else str(e))
        sys.exit(e.exit_code)
    except click.UsageError as e:
        where = f" (see `{e.ctx.command_path} --help`)" if e.ctx else ""
        _fail(" ".join(e.format_message().split()) + where, e.exit_code)
    except click.ClickException as e:
        _fail(" ".join(e.format_message().split()), e.exit_code)
    except typer.Abort:
        _fail("aborted", 1)
    if code == 128 + signal.SIGINT:  # typer turns KeyboardInterrupt into Exit(130) before it reaches us
        raise KeyboardInterrupt
    if isinstance(code, int) and code:
        sys.exit(code)


def main() -> None:
    logging.basicConfig(level=os.environ.get("RLAIF_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    exit_on_sigterm()
    logs.enable()
    crashed = False
    try:
        _run_app()
    except KeyboardInterrupt:
        _say_and_exit(INTERRUPTED, 128 + signal.SIGINT)
    except Exception as exc:  # noqa: BLE001 - narrowed just below
        if os.environ.get("RLAIF_DEBUG") or not is_user_error(exc):
            crashed = True
            text = redact("".join(traceback.format_exception(exc)))
            logs.note(text)
            print(text, end="", file=sys.stderr)
            sys.exit(1)
        _fail(_one_line(exc), 2)
    finally:
        where = logs.finish(keep=crashed)
        if crashed and where is not None:
            print(f"log of the libraries' output: {where}", file=sys.stderr)
