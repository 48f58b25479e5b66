"""Servers that die: a real vLLM server SIGKILLed mid-run and restarted, a server that stays down past the
client's deadline, and the bound on requests in flight (generator/engines/openai_engine.py).

The restart test runs on the client's defaults; the others shorten its deadline with
``RLAIF_OPENAI_DEADLINE_S`` / ``RLAIF_OPENAI_RETRIES``.
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import BASE_ENV, free_port
from test_openai_engine import FakeOpenAI, _dead_url

from generator.engines import Sampling
from generator.engines.openai_engine import OpenAIEngine
from plumbing.runs import load, read_manifest, shard_files

ROOT = Path(__file__).resolve().parents[1]


def _prompts(tmp_path: Path, shared_data: Path, n: int) -> Path:
    path = tmp_path / f"hh-{n}.jsonl"
    with gzip.open(shared_data / "hh-rlhf-harmless-base-test.jsonl.gz", "rt") as f:
        path.write_text("".join(line for _, line in zip(range(n), f, strict=False)))
    return path


def _generate(prompts: Path, out: Path, url: str, model: str, *, batch: int = 2, max_tokens: int = 16) -> list[str]:
    return [sys.executable, "-m", "rlaif", "generate", "--prompts", str(prompts), "--out", str(out), "--engine",
            "openai", "--base-url", url, "--model", model, "--n", "2", "--temperature", "0", "--max-tokens",
            str(max_tokens), "--batch-size", str(batch), "--quiet"]


def _env(deadline_s: float, retries: int) -> dict:
    return {**BASE_ENV, "RLAIF_OPENAI_DEADLINE_S": str(deadline_s), "RLAIF_OPENAI_RETRIES": str(retries)}


def _ids_unique(run: Path) -> list[str]:
    ids = load(run)["id"]
    assert len(ids) == len(set(ids)), "duplicate ids"
    return ids


# -- a: a real server killed mid-run and started again ---------------------------------------
class _Server:
    """``rlaif engine serve`` in its own process group (never the session's shared server)."""

    def __init__(self, model_dir: str, port: int, log: Path):
        self.url = f"http://127.0.0.1:{port}/v1"
        cmd = [sys.executable, "-m", "rlaif", "engine", "serve", "--model", model_dir, "--port", str(port)]
        with open(log, "a") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        self.log = log

    def wait_up(self, timeout: float = 300) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        pytest.fail(f"server not up in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        self.proc.wait()


@pytest.mark.integration
@pytest.mark.timeout(1500)
def test_server_killed_and_restarted_mid_run_loses_nothing(tmp_path, shared_data, embedded_model_dir):
    prompts = _prompts(tmp_path, shared_data, 12)  # 6 shards of 2
    port, log = free_port(), tmp_path / "server.log"
    server = _Server(embedded_model_dir, port, log)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    try:
        server.wait_up()
        # The client's DEFAULTS ride out the restart: once the server has answered, a refusal is retried
        # until the request's deadline (600 s), however many tries that takes.
        proc = subprocess.Popen(_generate(prompts, killed, server.url, "smollm2-135m"), cwd=ROOT,
                                env=dict(BASE_ENV), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while not shard_files(killed) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"generate ended before the server was killed: {proc.stderr.read()}"
        server.kill()
        at_kill = len(shard_files(killed))
        assert 1 <= at_kill < 6
        down = time.monotonic()
        server = _Server(embedded_model_dir, port, log)
        server.wait_up()
        outage = time.monotonic() - down
        assert proc.poll() is None, f"the client gave up during a {outage:.0f} s outage: {proc.stderr.read()}"
        assert proc.wait(timeout=600) == 0, proc.stderr.read()
        res = subprocess.run(_generate(prompts, clean, server.url, "smollm2-135m"), cwd=ROOT, capture_output=True,
                             text=True, timeout=600)
        assert res.returncode == 0, res.stderr
    finally:
        server.kill()
    ids = _ids_unique(killed)
    assert len(ids) == 12
    assert len(read_manifest(killed)["runtimes"]) == 1  # one start: the client rode out the outage
    resumed = {r["id"]: r["responses"] for r in load(killed)}
    uninterrupted = {r["id"]: r["responses"] for r in load(clean)}
    assert resumed == uninterrupted
    print(f"server killed after {at_kill} of 6 shards; outage {outage:.1f} s")


# -- b: the server stays down past the deadline ---------------------------------------------
def test_server_down_past_the_deadline_is_one_line_and_a_resume_loses_nothing(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(f'{{"prompt": "question number {i}?"}}\n' for i in range(12)))
    run, clean = tmp_path / "run", tmp_path / "clean"
    first = FakeOpenAI(delay_s=0.1)
    try:
        proc = subprocess.Popen(_generate(prompts, run, first.url, "served-model"), cwd=ROOT,
                                env=_env(deadline_s=3, retries=10_000), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not shard_files(run) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, proc.stderr.read()
    finally:
        first.close()  # the port now refuses connections, for good
    down = time.monotonic()
    rc = proc.wait(timeout=60)
    waited = time.monotonic() - down
    err = [ln for ln in proc.stderr.read().splitlines() if ln.strip()]
    assert rc != 0
    assert len(err) == 1 and err[0].startswith("error: no answer from") and "connection refused" in err[0], err
    assert waited < 3 + 10  # the deadline, not the 10,000 retries, ended it
    partial = _ids_unique(run)
    assert 1 <= len(partial) < 12
    dead = subprocess.run(_generate(prompts, run, _dead_url(), "served-model"), cwd=ROOT,
                          env=_env(deadline_s=2, retries=10_000), capture_output=True, text=True, timeout=60)
    assert dead.returncode != 0 and len(dead.stderr.strip().splitlines()) == 1, dead.stderr
    assert _ids_unique(run) == partial  # a failed start adds nothing and loses nothing
    second = FakeOpenAI()
    try:
        for out in (run, clean):
            res = subprocess.run(_generate(prompts, out, second.url, "served-model"), cwd=ROOT, capture_output=True,
                                 text=True, timeout=120)
            assert res.returncode == 0, res.stderr
    finally:
        second.close()
    assert sorted(_ids_unique(run)) == sorted(_ids_unique(clean)) and len(_ids_unique(run)) == 12
    assert {r["id"]: r["responses"] for r in load(run)} == {r["id"]: r["responses"] for r in load(clean)}


# -- c: requests in flight stay bounded -----------------------------------------------------
class _CountingFake(FakeOpenAI):
    """FakeOpenAI that records the most generation requests it held at once."""

    def __init__(self, **kw):
        self.in_flight = 0
        self.peak = 0
        self.gauge = threading.Lock()
        super().__init__(**kw)

    def _count(self, path: str, body: dict | None = None) -> int:
        if body is not None:
            with self.gauge:
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
        return super()._count(path, body)

    def answer(self, path: str, body: dict) -> dict:
        with self.gauge:
            self.in_flight -= 1
        return super().answer(path, body)


@pytest.mark.parametrize("limit", [4, 8])
def test_requests_in_flight_never_exceed_max_concurrency(limit):
    srv = _CountingFake(delay_s=0.15)
    try:
        with OpenAIEngine("served-model", base_urls=[srv.url], deadline_s=30, max_concurrency=limit) as eng:
            out = eng.generate([[{"role": "user", "content": f"q{i}"}] for i in range(40)], Sampling(n=1, max_tokens=4))
    finally:
        srv.close()
    assert len(out) == 40 and srv.hits["/v1/chat/completions"] == 40
    assert srv.peak == limit  # reached (so the gauge sees concurrency) and never exceeded
