"""The console shows our output; the libraries' output goes to the run's log file: for the command line, and
for a worker that runs stages without it (``worker_capture``).

A stage runs vLLM, transformers, datasets and huggingface_hub, which print INFO lines, tqdm bars,
Python warnings and C++ warnings, from this process and from the worker processes vLLM starts.
On the console a stage shows only its results (stdout), its progress bar and the warnings and
errors of our own packages (stderr); everything else goes to ``<out>/logs/rlaif.log``
(``plumbing/logs.py``), and ``rlaif --verbose`` shows it on stderr as well
(tests/test_logs.py; with the real vLLM engine:
tests/test_logs.py::test_vllm_info_lines_go_to_the_run_log_not_the_console).

How:

- file descriptors 1 and 2 point into a pipe; what reaches them (this process's C++ warnings,
  every child process, forked or spawned, which inherits them) is read by one thread and written
  to the log (into memory until the run directory is known), and with ``--verbose`` to stderr too;
- ``sys.stdout`` and ``sys.stderr`` become copies of the original console descriptors, so
  ``typer.echo``, the progress bar, one-line errors and tracebacks still reach the console; a
  forked child gets the pipe back as its ``sys.stdout``/``sys.stderr`` (``os.register_at_fork``);
- vLLM writes its log to ``sys.__stdout__`` (``VLLM_LOGGING_STREAM``, read by vLLM in each of its
  processes), i.e. into the pipe; transformers', datasets' and huggingface_hub's loggers lose their
  own console handlers and propagate to the root logger, whose handlers are the log (INFO and up,
  or ``RLAIF_LOG``) and, without ``--verbose``, the console for our packages' warnings and errors;
- Python warnings are logged (``logging.captureWarnings``); without ``--verbose`` tqdm bars are
  off (a bar in a log file is noise): ``TQDM_DISABLE``, ``HF_DATASETS_DISABLE_PROGRESS_BARS``,
  ``HF_HUB_DISABLE_PROGRESS_BARS``.

Secrets: every line written to the log passes ``redact``, which masks Hugging Face tokens
(``hf_...``) and the values of environment variables named like secrets (``HF_TOKEN``,
``OPENAI_API_KEY``, ...); the CLI's one-line errors and tracebacks pass it too (tests/test_secrets.py).

Outside ``rlaif.cli.main`` (``CliRunner`` tests, notebooks) nothing is redirected, except in a
``worker_capture`` block: the entry for a process that runs stages without the command line (a job
worker; it installs ``plumbing.signals.exit_on_sigterm`` too). The block captures as a command does,
keeps the log in its folder (or the first run directory a stage opens), adds an exception's traceback to
the log, and gives the console and the root logger back when it ends
(tests/test_logs.py::test_a_worker_captures_without_the_command_line).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from plumbing.logs import log_path, set_log_sink

OUR_PACKAGES = frozenset({"plumbing", "constitution", "prompts", "generator", "judge", "align", "evaluation", "publish",
                          "tasks", "pipeline", "service", "bench", "rlaif"})

# Commands whose libraries' output goes to a log, and the parameter naming the folder that keeps the
# log when no run directory attaches it first (RunWriter does, for generate, revise and judge; judge-eval
# once its output folder is swapped in, judge/eval_report.py, so a folder it refuses is never written).
# publish has none: its --dry-run folder is exactly what would be uploaded, a real push has no folder.
LOGGED_COMMANDS: dict[str, str | None] = {"generate": None, "revise": None, "judge": None, "judge-eval": None,
                                          "publish": None, "demo": None, "eval": None, "run": None,
                                          "constitution": None}  # `constitution ab` loads a judge

# Hub user access tokens are "hf_" + 34 letters; shorter ones (older, or pasted in part) are masked from 5
# characters on when they hold a capital or a digit (a library's hf_transfer or hf_overrides is left alone).
HF_TOKEN = re.compile(r"hf_(?:[A-Za-z0-9]{20,}|(?=[a-z]*[A-Z0-9])[A-Za-z0-9]{5,19})(?![A-Za-z0-9])")
API_KEY = re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]{16,}")  # OpenAI-style keys
URL_USERINFO = re.compile(r"(?<=://)[^/?#\s@]+@")  # http://user:password@host
HUB_TOKEN_NAMES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")  # masked whatever their length
SECRET_NAME = re.compile(r"(^|_)(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY)(_|$)", re.I)
MIN_SECRET = 8  # shorter values ("1", "false") would mask ordinary words
DRAIN_SECONDS = 5.0  # how long the exit waits for child processes still holding the pipe
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

log = logging.getLogger(__name__)

_enabled = False  # set by rlaif.cli.main: only the real command line redirects anything
_capture: Capture | None = None


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    """Values of the environment variables named like secrets, longest first."""
    env = os.environ if environ is None else environ
    return sorted({v for k, v in env.items() if SECRET_NAME.search(k) and
                   (len(v) >= MIN_SECRET or (k.upper() in HUB_TOKEN_NAMES and v.strip()))}, key=len, reverse=True)


def redact(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with Hub tokens, API keys, URL credentials and secret environment values replaced by ``***``."""
    for value in secret_values() if secrets is None else secrets:
        text = text.replace(value, "***")
    return URL_USERINFO.sub("***@", API_KEY.sub("sk-***", HF_TOKEN.sub("hf_***", text)))


class OurRecords(logging.Filter):
    """Records of our packages, from this process only (a forked child keeps a copy of the handler)."""

    def __init__(self) -> None:
        super().__init__()
        self.pid = os.getpid()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".")[0] in OUR_PACKAGES and os.getpid() == self.pid


class Capture:
    """Descriptors 1 and 2 -> a pipe -> the log (memory until ``attach``) and, verbose, stderr."""

    def __init__(self, command: str, verbose: bool):
        self.verbose = verbose
        self.path: Path | None = None
        self._secrets = secret_values()
        self._lock = threading.Lock()
        self._sink: io.BufferedIOBase = io.BytesIO()
        self._closed = False
        self._captured = False  # has anything but our own notes arrived?
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.note(f"==== rlaif {command} (pid {os.getpid()}) started {stamp} ====")
        sys.stdout.flush()
        sys.stderr.flush()
        console_out, console_err = os.dup(1), os.dup(2)  # not inherited by children (PEP 446)
        self.console = (console_out, console_err)
        read, write = os.pipe()
        os.dup2(write, 1)
        os.dup2(write, 2)
        os.close(write)
        self._pump = threading.Thread(target=self._drain, args=(read,), name="rlaif-log", daemon=True)
        self._pump.start()
        sys.stdout = _console(console_out, sys.__stdout__)
        sys.stderr = _console(console_err, sys.__stderr__)

    def _drain(self, read: int) -> None:
        """Copy the pipe to the log, whole lines at a time (``\\r`` ends a tqdm line), until EOF."""
        pending = b""
        while chunk := os.read(read, 1 << 16):
            self._captured = True
            pending += chunk
            cut = max(pending.rfind(b"\n"), pending.rfind(b"\r")) + 1
            if cut == 0 and len(pending) >= 1 << 16:
                cut = len(pending)
            if cut:
                self._write(pending[:cut], tee=self.verbose)
                pending = pending[cut:]
        if pending:
            self._write(pending, tee=self.verbose)
        os.close(read)

    def _write(self, data: bytes, tee: bool) -> None:
        text = redact(data.decode("utf-8", "surrogateescape"), self._secrets)
        with self._lock:
            if self._closed:
                return
            self._sink.write(text.encode("utf-8", "surrogateescape"))
            self._sink.flush()
        if tee:
            sys.stderr.write(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
            sys.stderr.flush()

    def note(self, line: str) -> None:
        """A line of ours for the log only (the header, the one-line error, a traceback)."""
        self._write((line.rstrip("\n") + "\n").encode("utf-8", "surrogateescape"), tee=False)

    def attach(self, folder: Path) -> None:
        """Keep the log in ``folder/logs/rlaif.log`` from now on, with what came before; the first
        folder wins (``rlaif demo`` writes two runs, one log)."""
        if self.path is not None:
            return
        path = log_path(folder)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            sink = open(path, "ab")  # a resumed run appends
        except OSError as e:
            log.warning("cannot write the log file %s (%s); the libraries' output is not kept", path,
                        e.strerror or e)
            return
        with self._lock:
            sink.write(self._sink.getvalue())
            sink.flush()
            self._sink, self.path = sink, path

    def close(self, keep: bool, stop: threading.Event | None = None) -> Path | None:
        """Stop: point 1 and 2 at /dev/null, wait for the children's last lines (at most ``DRAIN_SECONDS``,
        and no longer once ``stop`` is set), close the log. Returns the log: the run's, else with ``keep`` a
        temp file holding what was captured (when the libraries said anything: a log of our own notes
        only would repeat the traceback), else None."""
        for handler in logging.getLogger().handlers:
            handler.flush()
        for stream in (sys.__stdout__, sys.__stderr__):
            stream.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
        deadline = time.monotonic() + DRAIN_SECONDS
        while self._pump.is_alive() and not (stop and stop.is_set()) and time.monotonic() < deadline:
            self._pump.join(timeout=0.05)
        with self._lock:
            self._closed = True
            if self.path is None and keep and self._captured:
                fd, name = tempfile.mkstemp(prefix="rlaif-", suffix=".log")
                with os.fdopen(fd, "wb") as f:
                    f.write(self._sink.getvalue())
                self.path = Path(name)
            self._sink.close()
        return self.path


def _console(fd: int, like) -> io.TextIOWrapper:
    return open(fd, "w", encoding=like.encoding or "utf-8", errors=like.errors or "strict",
                buffering=1 if like.line_buffering else -1)


def _after_fork_in_child() -> None:
    if _capture is not None:  # the child's output belongs in the pipe, not on our console
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__


ROUTED_LIBRARIES = ("transformers", "datasets", "huggingface_hub")
_bars_off = False  # the progress bars of a library routed from now on: off unless --verbose
_hooked = False


def _route_libraries(verbose: bool) -> None:
    """transformers, datasets and huggingface_hub log through the root logger, not their own handlers: each as
    soon as its ``<name>.utils.logging`` is imported (a post-import hook; at once if it is already). Importing
    them here instead cost every command transformers' import (0.7 s of CPU on a 2-core box: it reads every
    installed package's metadata) though a command on the fake engine never uses it."""
    global _bars_off, _hooked
    _bars_off = not verbose
    if _hooked:
        return
    _hooked = True
    import wrapt

    for name in ROUTED_LIBRARIES:
        wrapt.register_post_import_hook(_route, f"{name}.utils.logging")


def _route(lib) -> None:
    """One library's logging module, just imported: its own console handler goes, its records propagate."""
    name = lib.__name__.split(".")[0]
    lib.get_logger()  # sets the library's handler up now (transformers does so on first use) so it can go
    root = logging.getLogger(name)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.propagate = True
    if _bars_off and hasattr(lib, "disable_progress_bar"):
        lib.disable_progress_bar()


def _set_up_logging(verbose: bool) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(os.environ.get("RLAIF_LOG", "INFO").upper())
    to_log = logging.StreamHandler(sys.__stderr__)  # descriptor 2: the pipe
    to_log.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(to_log)
    if not verbose:  # with --verbose the whole log is on stderr already
        console = logging.StreamHandler(sys.stderr)
        console.setLevel(logging.WARNING)
        console.addFilter(OurRecords())
        console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(console)
    logging.captureWarnings(True)


def enable() -> None:
    """Called by ``rlaif.cli.main``: this process is the command line, ``configure`` may redirect."""
    global _enabled
    _enabled = True


def configure(command: str | None, verbose: bool) -> None:
    """Set up the console and the log for ``command`` (the root callback calls this first)."""
    if not (_enabled and command in LOGGED_COMMANDS) or _capture is not None:
        if verbose:
            logging.getLogger().setLevel(logging.INFO)
        return
    _start(command, verbose)


def _start(command: str, verbose: bool) -> None:
    global _capture
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.__stdout__")
    if not verbose:
        for var in ("TQDM_DISABLE", "HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS"):
            os.environ.setdefault(var, "1")
    _capture = Capture(command, verbose)
    _route_libraries(verbose)
    _set_up_logging(verbose)
    set_log_sink(_capture.attach)


def attach(folder: str | Path) -> None:
    if _capture is not None:
        _capture.attach(Path(folder))


def note(line: str) -> None:
    """Write one of our lines into the log only (nothing when not capturing)."""
    if _capture is not None:
        _capture.note(line)


def finish(keep: bool) -> Path | None:
    """End the capture (``rlaif.cli.main``'s last step); returns where the log is, see ``Capture.close``."""
    global _capture
    if _capture is None:
        return None
    set_log_sink(None)
    if _enabled:  # the command line, about to exit (a worker goes on after its block)
        _release_resource_tracker()
    try:
        with _ctrl_c_stops_waiting() as stop:
            return _capture.close(keep, stop)
    finally:
        _capture = None


def _release_resource_tracker() -> None:
    """Let multiprocessing's resource tracker end now rather than when this process exits.

    The tracker (started by the first process spawned through multiprocessing: vLLM's EngineCore) inherits
    descriptors 1 and 2, i.e. the pipe, and runs until the descriptor this process keeps to it is closed, at
    exit. So the drain in ``Capture.close`` waited its whole ``DRAIN_SECONDS`` for the pipe's end after every
    command that ran vLLM (tests/test_logs.py::test_the_resource_tracker_ends_before_the_command_does).
    Closing that descriptor here is what exit does, a little earlier: the tracker unlinks what is still
    registered (the command is over; at exit the same happens after the objects' finalizers ran) and ends, and
    the pipe ends with it; a process that still holds the tracker (a child of ours not yet gone) keeps it, and
    the drain waits for it as before. Written against CPython 3.11-3.13 (``ResourceTracker._fd``); where that
    attribute is missing nothing changes."""
    module = sys.modules.get("multiprocessing.resource_tracker")
    tracker = getattr(module, "_resource_tracker", None)
    fd = getattr(tracker, "_fd", None)
    if isinstance(fd, int):
        tracker._fd = None  # a later use starts a new tracker (ResourceTracker.ensure_running)
        os.close(fd)


@contextlib.contextmanager
def worker_capture(name: str, folder: str | Path | None = None, verbose: bool = False) -> Iterator[None]:
    """Capture the libraries' output of the work in the block, for a process that runs stages without the
    command line (which does the same around each command: ``rlaif.cli.main``). The log is
    ``folder/logs/rlaif.log`` when ``folder`` is given (made if missing), else that of the first run
    directory a stage opens; it starts with ``==== rlaif <name> ...``. An exception leaving the block is
    written to the log (secrets masked) and raised on; a block that failed before any folder was known keeps
    its log in a temp file. On the way out descriptors 1 and 2, ``sys.stdout``/``sys.stderr``, the root
    logger's handlers and level, and the warnings routing are what they were before the block; the
    libraries' loggers keep propagating to the root logger and the progress-bar environment variables stay
    set. One block at a time per process, in the main thread."""
    if _capture is not None:
        raise RuntimeError("the libraries' output is captured already; one worker_capture block at a time")
    root = logging.getLogger()
    before = list(root.handlers), root.level
    _start(name, verbose)
    console = _capture.console
    try:
        if folder is not None:
            attach(folder)
        yield
    except BaseException as exc:
        import traceback

        # a traceback for a failure; one line for an interrupt or a SIGTERM (plumbing/signals.py)
        note(redact("".join(traceback.format_exception(exc))) if isinstance(exc, Exception) else
             f"ended by {type(exc).__name__}{f' {exc}' if str(exc) else ''}")
        finish(keep=True)
        raise
    else:
        finish(keep=False)
    finally:
        _give_back(console, before)


def _give_back(console: tuple[int, int], logging_before: tuple[list[logging.Handler], int]) -> None:
    """The console descriptors and streams, and the root logger, as they were before ``_start``."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.dup2(console[0], 1)
    os.dup2(console[1], 2)
    for stream in (sys.stdout, sys.stderr):
        stream.close()  # the copies Capture made (their descriptors are console[0] and console[1])
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    handlers, level = logging_before
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


@contextlib.contextmanager
def _ctrl_c_stops_waiting():
    """While the console is restored, Ctrl-C (a second one, when the first ended the command) stops the
    wait for child processes' last lines instead of raising ``KeyboardInterrupt`` inside the restore,
    which printed a traceback after the one-line message (tests/test_ctrl_c.py)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():  # only the main thread handles signals
        yield stop
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def log_into(param: str, command: Callable) -> Callable:
    """Wrap a typer command so its log lands in the folder its ``param`` names, once that folder exists
    (before the command when it already does, else after it): ``rlaif demo`` writes its runs inside
    its ``--out``, which has no RunWriter of its own. Only for commands that write into any folder
    they are given: a folder the command would refuse must not be written first."""

    @functools.wraps(command)
    def wrapped(**kwargs):
        folder = kwargs.get(param)
        if folder is not None and Path(folder).is_dir():
            attach(folder)
        try:
            return command(**kwargs)
        finally:
            if folder is not None and Path(folder).is_dir():
                attach(folder)

    return wrapped


if hasattr(os, "register_at_fork"):  # POSIX only; elsewhere there is no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
