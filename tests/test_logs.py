"""The console shows our output; the libraries' output goes to ``<out>/logs/rlaif.log`` (plumbing/capture.py).

``NoisyEngine`` is the fake engine plus output through every channel a real engine's libraries
use: a vLLM-style log handler, transformers' logger, a Python warning, raw writes to descriptors
1 and 2, a forked child (vLLM's EngineCore is one), a spawned subprocess, a tqdm bar. The real vLLM
engine is run once per mode in the integration test at the end.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import pytest

from generator.engines.fake import FakeEngine

NOISY = "tests.test_logs:NoisyEngine"
MARKERS = ["NOISY vllm-handler", "NOISY transformers-warning", "NOISY python-warning", "NOISY fd1-write",
           "NOISY fd2-write", "NOISY forked-print", "NOISY forked-logger", "NOISY spawned-stdout",
           "NOISY spawned-stderr"]
OURS = "OURS engine-warning"


def _forked_child() -> None:
    print("NOISY forked-print")
    logging.getLogger("vllm.noisy").warning("NOISY forked-logger")


class NoisyEngine(FakeEngine):
    """Fake replies; on construction, output through each channel (``NOISY_CRASH=1``: then raise;
    ``NOISY_CRASH=early``: raise first)."""

    def __init__(self, model: str = "fake-model", **kwargs):
        import logging.config
        import multiprocessing
        import subprocess
        import warnings

        from tqdm import tqdm
        from transformers.utils import logging as hf_logging

        super().__init__(model, **kwargs)
        if os.environ.get("NOISY_CRASH") == "early":
            raise RuntimeError("NOISY engine crashed before saying anything")
        # vLLM's own handler: a dictConfig stream handler on VLLM_LOGGING_STREAM (vllm/logger.py)
        logging.config.dictConfig({
            "version": 1, "disable_existing_loggers": False,
            "handlers": {"vllm": {"class": "logging.StreamHandler",
                                  "stream": os.environ.get("VLLM_LOGGING_STREAM", "ext://sys.stdout")}},
            "loggers": {"vllm": {"handlers": ["vllm"], "level": "INFO", "propagate": False}}})
        logging.getLogger("vllm.noisy").info("NOISY vllm-handler")
        hf_logging.get_logger("transformers.noisy").warning("NOISY transformers-warning")
        warnings.warn("NOISY python-warning", UserWarning, stacklevel=1)
        logging.getLogger("generator.noisy").warning(OURS)
        os.write(1, b"NOISY fd1-write\n")
        os.write(2, b"NOISY fd2-write\n")
        os.write(2, f"NOISY careless token {os.environ.get('HF_TOKEN')}\n".encode())
        child = multiprocessing.get_context("fork").Process(target=_forked_child)
        child.start()
        child.join()
        subprocess.run([sys.executable, "-c", "import sys; print('NOISY spawned-stdout'); "
                                              "print('NOISY spawned-stderr', file=sys.stderr)"], check=True)
        for _ in tqdm(range(3), desc="NOISY-tqdm"):
            pass
        if os.environ.get("NOISY_CRASH"):  # a careless message quoting the environment's token
            raise RuntimeError(f"NOISY engine crashed (token {os.environ.get('HF_TOKEN')})")


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "Say hi."}\n{"prompt": "Name a colour."}\n')
    return path


def test_library_output_goes_to_the_run_log_not_the_console(run_cli, prompts, tmp_path):
    token = "hf_logsFAKEtoken0123456789SECRET"
    out = tmp_path / "gen"
    res = run_cli("generate", "--prompts", prompts, "--out", out, "--engine", NOISY, "--n", "2",
                  env={"HF_TOKEN": token})
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [f"{out}: 2 train, 0 errors"]
    assert "NOISY" not in res.stderr, res.stderr  # neither the lines nor the tqdm bar
    assert OURS in res.stderr  # our own warnings still reach the console
    text = (out / "logs" / "rlaif.log").read_text()
    assert text.startswith("==== rlaif generate (pid ")
    for marker in [*MARKERS, OURS]:
        assert marker in text, marker
    assert "NOISY-tqdm" not in text  # bars are off without --verbose
    assert "NOISY careless token ***" in text and token not in text  # the log masks secrets too


def test_verbose_shows_the_library_output_on_stderr_too(run_cli, prompts, tmp_path):
    out = tmp_path / "gen"
    res = run_cli("--verbose", "generate", "--prompts", prompts, "--out", out, "--engine", NOISY, "--n", "2")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [f"{out}: 2 train, 0 errors"]  # results stay alone on stdout
    text = (out / "logs" / "rlaif.log").read_text()
    for marker in [*MARKERS, OURS]:
        assert marker in res.stderr, marker
        assert marker in text, marker
    assert "NOISY-tqdm" in res.stderr


def test_a_resumed_run_appends_to_its_log(run_cli, prompts, tmp_path):
    out = tmp_path / "gen"
    for _ in range(2):
        assert run_cli("generate", "--prompts", prompts, "--out", out, "--engine", "fake").returncode == 0
    text = (out / "logs" / "rlaif.log").read_text()
    assert text.count("==== rlaif generate") == 2


def test_a_crash_shows_the_traceback_masked_and_where_the_log_is(run_cli, prompts, tmp_path):
    token = "hf_logsFAKEtoken0123456789SECRET"
    out = tmp_path / "gen"
    res = run_cli("generate", "--prompts", prompts, "--out", out, "--engine", NOISY,
                  env={"NOISY_CRASH": "1", "HF_TOKEN": token})
    assert res.returncode == 1
    assert "Traceback" in res.stderr and "RuntimeError: NOISY engine crashed (token ***)" in res.stderr
    assert "NOISY fd1-write" not in res.stderr + res.stdout
    log_file = out / "logs" / "rlaif.log"
    assert res.stderr.strip().splitlines()[-1] == f"log of the libraries' output: {log_file}"
    text = log_file.read_text()
    assert "NOISY fd1-write" in text and "RuntimeError: NOISY engine crashed (token ***)" in text
    assert token not in res.stdout + res.stderr + text


def test_a_crash_before_any_output_folder_keeps_its_log_in_a_temp_file(run_cli, shared_data, tmp_path):
    args = ("judge-eval", "--human", shared_data / "hh-rlhf-harmless-base-test.jsonl.gz", "--limit", "2",
            "--out", tmp_path / "eval", "--engine", NOISY)
    res = run_cli(*args, env={"NOISY_CRASH": "1"})
    assert res.returncode == 1 and "RuntimeError: NOISY engine crashed" in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("log of the libraries' output: ") and not (tmp_path / "eval").exists()
    temp_log = Path(last.split(": ", 1)[1])
    try:
        text = temp_log.read_text()
        assert text.startswith("==== rlaif judge-eval") and "NOISY fd2-write" in text
        assert (temp_log.stat().st_mode & 0o777) == 0o600  # the user's own file
    finally:
        temp_log.unlink()
    quiet = run_cli(*args, env={"NOISY_CRASH": "early"})  # nothing from the libraries: no file to point at
    assert quiet.returncode == 1 and "NOISY engine crashed before saying anything" in quiet.stderr
    assert "log of the libraries' output" not in quiet.stderr


def test_a_bad_input_error_stays_one_line(run_cli, tmp_path):
    res = run_cli("generate", "--prompts", tmp_path / "missing.jsonl", "--out", tmp_path / "gen", "--engine", NOISY)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ") and "missing.jsonl" in res.stderr
    assert not (tmp_path / "gen").exists()  # no log folder in a run that was refused


WORKER = """
import logging, os, subprocess, sys
from plumbing.capture import worker_capture
from plumbing.signals import exit_on_sigterm

exit_on_sigterm()
ok, failed = sys.argv[1], sys.argv[2]
with worker_capture("worker", ok):
    os.write(1, b"LIB fd1\\n")
    os.write(2, b"LIB fd2\\n")
    subprocess.run([sys.executable, "-c", "print('LIB child')"], check=True)
    logging.getLogger("transformers.lib").warning("LIB transformers")
    logging.getLogger("generator.ours").warning("OURS warning")
    print("RESULT", flush=True)
print("AFTER", flush=True)
os.write(1, b"AFTER fd1\\n")
logging.getLogger("anything").warning("AFTER warning")  # the root logger is the process's own again
try:
    with worker_capture("worker", failed):
        os.write(2, b"LIB before the crash\\n")
        raise RuntimeError("crashed, token " + os.environ["HF_TOKEN"])
except RuntimeError:
    print("CAUGHT", flush=True)
print("rlaif imported" if "rlaif" in sys.modules else "rlaif not imported", flush=True)
"""


def test_a_worker_captures_without_the_command_line(tmp_path):
    """``plumbing.capture.worker_capture``: the command line's capture for a process that runs stages without
    ``rlaif`` (a job worker): the libraries' output goes to the folder's log, the process's own output to the
    console, the console and logging are given back after the block, and a crash's traceback is logged masked."""
    import subprocess

    from conftest import BASE_ENV, ROOT

    token = "hf_workerFAKEtoken0123456789SECRET"
    ok, failed = tmp_path / "ok", tmp_path / "failed"
    res = subprocess.run([sys.executable, "-c", WORKER, str(ok), str(failed)], capture_output=True, text=True,
                         timeout=300, cwd=str(ROOT), env={**BASE_ENV, "HF_TOKEN": token})
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["RESULT", "AFTER", "AFTER fd1", "CAUGHT", "rlaif not imported"]
    assert "LIB" not in res.stderr and "OURS warning" in res.stderr and "AFTER warning" in res.stderr
    text = (ok / "logs" / "rlaif.log").read_text()
    assert text.startswith("==== rlaif worker (pid ")
    for line in ("LIB fd1", "LIB fd2", "LIB child", "LIB transformers", "OURS warning"):
        assert line in text, line
    assert "AFTER" not in text and "RESULT" not in text
    crashed = (failed / "logs" / "rlaif.log").read_text()
    assert "LIB before the crash" in crashed and "RuntimeError: crashed, token ***" in crashed
    assert token not in crashed + res.stdout + res.stderr


SPAWNER = """
import multiprocessing, os, sys, time
from pathlib import Path

from plumbing import capture


def children() -> dict[int, tuple[str, bytes]]:
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat, cmd = Path(f"/proc/{pid}/stat").read_text(), Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == os.getpid():
            out[int(pid)] = (fields[0], cmd)
    return out


capture.enable()  # what rlaif.cli.main does, then the command's capture
capture.configure("run", False)
capture.attach(sys.argv[1])
child = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))  # as vLLM starts EngineCore
child.start()
child.join()
tracker = [pid for pid, (_, cmd) in children().items() if b"resource_tracker" in cmd]
capture.finish(keep=False)
deadline = time.monotonic() + 60  # a bound on the wait for the tracker's exit, not a speed check
while tracker and children().get(tracker[0], ("gone",))[0] not in ("Z", "gone") and time.monotonic() < deadline:
    time.sleep(0.05)
print(len(tracker), children().get(tracker[0], ("gone",))[0] if tracker else "-", flush=True)
"""


def test_the_resource_tracker_ends_before_the_command_does(tmp_path):
    """A command that started a process through multiprocessing's spawn (vLLM's EngineCore) has a resource tracker,
    which holds the log's pipe until the command exits; ``finish`` lets it end first, so the drain of the pipe
    gets its end of file instead of waiting out its bound after every vLLM command. The tracker is this
    process's child: ended, it is a zombie (Z) once ``finish`` returns; still running, it would be S."""
    import subprocess

    from conftest import BASE_ENV, ROOT

    res = subprocess.run([sys.executable, "-c", SPAWNER, str(tmp_path)], capture_output=True, text=True,
                         timeout=300, cwd=str(ROOT), env=BASE_ENV)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["1", "Z"], res.stdout + res.stderr


@pytest.mark.integration
def test_vllm_info_lines_go_to_the_run_log_not_the_console(run_cli, prompts, tmp_path, embedded_model_dir):
    """Real vLLM (main process, EngineCore, worker): INFO lines only in the log; --verbose shows them."""
    info = re.compile(r"\bINFO\b")
    args = ("--prompts", prompts, "--engine", "vllm", "--n", "1", "--max-tokens", "8")
    quiet = run_cli("generate", *args, "--out", tmp_path / "quiet")
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert quiet.stdout.splitlines() == [f"{tmp_path / 'quiet'}: 2 train, 0 errors"]
    assert not info.search(quiet.stdout + quiet.stderr), quiet.stderr[-3000:]
    assert "vllm" not in quiet.stderr.lower(), quiet.stderr[-3000:]
    text = (tmp_path / "quiet" / "logs" / "rlaif.log").read_text()
    assert re.search(r"\(EngineCore pid=\d+\) INFO ", text) and re.search(r"\(MainProcess pid=\d+\) INFO ", text)

    loud = run_cli("--verbose", "generate", *args, "--out", tmp_path / "loud")
    assert loud.returncode == 0, loud.stderr[-3000:]
    assert loud.stdout.splitlines() == [f"{tmp_path / 'loud'}: 2 train, 0 errors"]
    assert re.search(r"\(EngineCore pid=\d+\) INFO ", loud.stderr)
    assert re.search(r"\(EngineCore pid=\d+\) INFO ", (tmp_path / "loud" / "logs" / "rlaif.log").read_text())
