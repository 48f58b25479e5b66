"""The job service survives its own death: ``rlaif serve`` SIGKILLed while a job runs and started again on the
same root. A job whose runner is still alive (same pid AND start time) is adopted and ends as it would have; a
job whose runner died too is marked interrupted, what is left of it is ended (one writer per pipeline root) and
it resumes from its run folder. Either way the rows equal those of an uninterrupted `rlaif run` and no two
attempts ever ran at once (the service's own lines in the job's log: each attempt starts after the one before
it ended or was found interrupted)."""

from __future__ import annotations

import os
import re
import signal

import pytest
from test_service import Reference, Served, _stat, fake_recipe, job_processes, prompts, same_rows

DELAY = {"RLAIF_FAKE_DELAY_S": "0.5"}  # 24 generate calls: the job outlives a restart of the service
N = 24


def _recipe(prompts_path: str) -> str:
    return fake_recipe(prompts_path, batch_size=1, judge_batch_size=16)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The rows of an uninterrupted `rlaif run` of the tests' recipe (the prompt file's place does not count):
    started here, waited for by the first test that compares (meanwhile the tests' own jobs run)."""
    base = tmp_path_factory.mktemp("reference")
    (base / "p.jsonl").write_bytes(prompts(N))
    reference = Reference(_recipe(str(base / "p.jsonl")), base / "direct")
    yield reference
    reference.close()


def _alive(pid: int, ticks: str) -> bool:
    fields = _stat(str(pid))
    return fields is not None and fields[19] == ticks and fields[0] != "Z"


def _started(served: Served, job_id: str, job_dir) -> None:
    """Wait until the job has written a generate shard: it is mid-run."""
    data = job_dir / "run" / "generate" / "data"
    served.wait(job_id, lambda j: data.is_dir() and any(data.iterdir()))


def _service_lines(log: str) -> list[str]:
    """The service's lines of a job's log, pids left out."""
    return [re.sub(r" \(runner pid \d+\)", "", ln) for ln in log.splitlines() if ln.startswith("[service]")]


def test_a_killed_service_adopts_its_running_job(tmp_path, reference):
    first = Served(tmp_path / "root", env=DELAY)
    recipe = _recipe(first.upload("p.jsonl", prompts(N)))
    job = first.submit(recipe)
    job_dir = first.root / "jobs" / job["id"]
    _started(first, job["id"], job_dir)
    first.stop(signal.SIGKILL)
    assert len(job_processes(job_dir)) >= 2  # the job did not die with the service
    second = Served(tmp_path / "root", env=DELAY)
    try:
        done = second.end(job["id"])
        log = second.log(job["id"])
    finally:
        second.stop()
    assert done["state"] == "succeeded" and done["attempt"] == 1 and done["exit_code"] == 0, log
    assert _service_lines(log) == ["[service] attempt 1 started",
                                   "[service] the service restarted; it adopted the running job",
                                   "[service] attempt 1 ended: exit code 0"]
    same_rows(job_dir / "run", reference())


def test_a_job_whose_runner_died_with_the_service_resumes_alone(tmp_path, reference):
    """The service and the job's runner are SIGKILLed; `rlaif run` is left running, orphaned. The restarted
    service does not adopt it (its runner is gone): it ends it before the job starts again, so the new attempt
    is the root's only writer (`rlaif run` would refuse a second), and the job resumes to the same rows."""
    first = Served(tmp_path / "root", env=DELAY)
    recipe = _recipe(first.upload("p.jsonl", prompts(N)))
    job = first.submit(recipe)
    job_dir = first.root / "jobs" / job["id"]
    _started(first, job["id"], job_dir)
    runner = [p for p in job_processes(job_dir) if b"service.runner" in open(f"/proc/{p}/cmdline", "rb").read()]
    assert len(runner) == 1
    first.stop(signal.SIGKILL)
    os.kill(runner[0], signal.SIGKILL)
    orphans = {p: _stat(str(p))[19] for p in job_processes(job_dir) if p != runner[0]}
    assert orphans  # rlaif run goes on without its runner, with many prompts still to go
    second = Served(tmp_path / "root")  # no fake delay: only attempt 1 (the first service's) had to be slow
    try:
        second.wait(job["id"], lambda j: j["attempt"] == 2)
        assert not [p for p, ticks in orphans.items() if _alive(p, ticks)]  # ended before attempt 2 started
        done = second.end(job["id"])
        log = second.log(job["id"])
    finally:
        second.stop()
    assert done["state"] == "succeeded" and done["attempt"] == 2, log
    assert _service_lines(log) == ["[service] attempt 1 started",
                                   "[service] attempt 1 was interrupted (its processes are gone); it resumes",
                                   "[service] attempt 2 started",
                                   "[service] attempt 2 ended: exit code 0"]
    assert "another `rlaif run`" not in log
    second_attempt = log[log.index("attempt 2 started"):]
    assert re.search(r"generate\s+(resume|reuse)", second_attempt)
    assert not job_processes(job_dir)
    same_rows(job_dir / "run", reference())
