"""``rlaif bench service``: how fast the job service answers, on fake-engine jobs, against its own server.

The bench starts ``rlaif serve`` on 127.0.0.1 (a free port, a fresh root in a temporary folder) with the fake
engine slowed by ``RLAIF_FAKE_DELAY_S`` so that a job stays running while it is measured, and reports:

- submit -> running: seconds from sending ``POST /jobs`` to ``GET /jobs/{id}`` saying ``running`` (the recipe's
  check, the scheduler's pick-up and the job's process start), per job, polled every ``POLL_S``; the POST's
  own seconds beside it;
- ``GET /jobs`` while a job runs: requests/s of one client on one keep-alive connection, and the p50/p99 of
  each request's latency;
- SSE line latency: a line appended to the job's ``log`` (``<root>/jobs/<id>/log``, the API's contract) ->
  the ``/events`` stream delivering it to a client, p50/p99;
- cancel -> gone: seconds from ``POST /jobs/{id}/cancel`` to the job's state ``cancelled`` and no process of
  the job left (psutil, every process whose command line names the job's folder);
- restart -> reconciled: the server is SIGKILLed while a job runs and started again; seconds from the new
  process's start to ``/health`` answering and to the job adopted (still running, same attempt); then the API
  and the job's processes are SIGKILLed together, and the seconds to the job running again (next attempt).

The CPU it ran on is printed as the other benches print it (bench/generate.py ``machine_info``). Fake-engine
jobs measure the service, not a model: generate and judge take the fake delay per engine call.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parents[1]
POLL_S = 0.01
PROMPTS = '{"prompt": "How do I keep basil alive?"}\n{"prompt": "Name a prime."}\n'
STARTUP_S = 120.0  # an API process on a loaded 2-core box imports FastAPI, pydantic and the pipeline


def fake_recipe(name: str, prompts: Path) -> str:
    """A recipe the fake engine runs (generate -> judge); its root is the service's to choose."""
    return (f"name: {name}\nroot: runs/{name}\nprompts: {prompts}\nstages: [generate, judge]\n"
            "engine: {engine: fake, batch_size: 1}\njudge: {engine: fake}\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """``rlaif serve`` as a child process on 127.0.0.1 (its output in ``<folder>/serve.log``); ``stop`` ends it.

    ``folder`` holds ``root/`` (the service's root) and ``data/`` (its one --data-dir); ``env`` adds to the
    child's environment (RLAIF_FAKE_DELAY_S slows its jobs)."""

    def __init__(self, folder: Path, env: dict[str, str] | None = None, token_file: Path | None = None,
                 extra: tuple[str, ...] = ()):
        self.folder, self.root, self.data = folder, folder / "root", folder / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.env = {**{k: v for k, v in os.environ.items() if k != "RLAIF_SERVICE_TOKEN"},
                    "OMP_WAIT_POLICY": "PASSIVE", **(env or {})}
        self.args = [*(("--token-file", str(token_file)) if token_file else ()), *extra]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.started = 0.0

    def start(self, wait: bool = True) -> LocalServer:
        argv = [sys.executable, "-m", "rlaif", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--root", str(self.root), "--data-dir", str(self.data), *self.args]
        self.started = time.perf_counter()
        with open(self.folder / "serve.log", "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = STARTUP_S, token: str | None = None) -> float:
        """Seconds from ``start`` until ``/health`` answered 200."""
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rlaif serve exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/api/v1/health", headers=headers, timeout=2.0).status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.HTTPError:
                pass  # not listening yet
            time.sleep(POLL_S * 5)
        raise RuntimeError(f"rlaif serve did not answer /health within {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return " | ".join((self.folder / "serve.log").read_text(errors="replace").splitlines()[-8:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL the API process only (its jobs are process groups of their own)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def job_processes(job_folder: Path) -> list:
    """Live processes whose command line names the job's folder (its runner and ``rlaif run``)."""
    import psutil

    needle, found = str(job_folder), []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.info.get("status") != psutil.STATUS_ZOMBIE and any(needle in part for part in cmdline):
            found.append(proc)
    return found


def wait_for(check, timeout: float, what: str) -> float:
    """Seconds until ``check()`` is true, polled every POLL_S."""
    start = time.perf_counter()
    while not check():
        if time.perf_counter() - start > timeout:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        time.sleep(POLL_S)
    return time.perf_counter() - start


def percentiles(values: list[float]) -> dict:
    """p50, p99 and max, in milliseconds; a percentile is the nearest rank: the ceil(q * n)-th smallest value."""
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {"n": len(ordered), "p50_ms": round(rank(0.50) * 1e3, 2), "p99_ms": round(rank(0.99) * 1e3, 2),
            "max_ms": round(ordered[-1] * 1e3, 2)}


def submit_running(client, recipe: str) -> tuple[str, float, float]:
    """(job id, seconds of the POST itself (the recipe is checked as ``rlaif run --dry-run`` checks it), seconds
    from sending the POST to ``GET /jobs/{id}`` saying ``running``)."""
    t0 = time.perf_counter()
    job = client.submit(recipe)
    posted = time.perf_counter() - t0
    if job["state"] != "running":
        wait_for(lambda: client.job(job["id"])["state"] == "running", 120, f"job {job['id']} running")
    return job["id"], posted, time.perf_counter() - t0


def list_latency(client, requests: int) -> dict:
    """``GET /jobs`` ``requests`` times in a row on one connection: requests/s and latency percentiles."""
    times = []
    start = time.perf_counter()
    for _ in range(requests):
        t0 = time.perf_counter()
        client.jobs()
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    return {"requests_per_s": round(requests / total, 1), **percentiles(times)}


def sse_latency(client, log_path: Path, job_id: str, lines: int, gap_s: float = 0.05) -> dict:
    """Append ``lines`` marker lines to the job's log; time each until the event stream delivers it."""
    received: dict[int, float] = {}
    ready = threading.Event()
    errors: list[str] = []

    def read() -> None:
        import httpx

        from service.client import ServiceError

        try:
            with client.events(job_id) as stream:
                ready.set()
                for ev in stream:
                    if ev.event == "log" and ev.data.startswith("bench-sse "):
                        received[int(ev.data.split()[1])] = time.perf_counter()
                        if len(received) == lines:
                            return
        except (ServiceError, httpx.HTTPError, OSError) as e:
            errors.append(str(e))
            ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ready.wait(30)
    sent: dict[int, float] = {}
    for k in range(lines):
        with open(log_path, "ab") as log:  # O_APPEND: whole lines beside the job's own
            sent[k] = time.perf_counter()
            log.write(f"bench-sse {k}\n".encode())
        time.sleep(gap_s)
    reader.join(30)
    if errors or len(received) < lines:
        raise RuntimeError(f"the event stream delivered {len(received)} of {lines} lines {errors[:1]}")
    return percentiles([received[k] - sent[k] for k in range(lines)])


def cancel_gone(client, job_id: str, job_folder: Path) -> float:
    """Seconds from POST cancel to state ``cancelled`` with none of the job's processes left."""
    t0 = time.perf_counter()
    client.cancel(job_id)
    wait_for(lambda: client.job(job_id)["state"] == "cancelled" and not job_processes(job_folder), 120,
             f"job {job_id} cancelled")
    return time.perf_counter() - t0


def restart_reconciled(server: LocalServer, client, job_id: str) -> dict:
    """SIGKILL the API while the job runs and start it again, twice: (1) the job's processes survive and are
    adopted: seconds from the new process's start to ``/health`` answering (the store is reconciled before the
    port is served) and to the job answering ``running`` in the same attempt; (2) the job's processes are
    SIGKILLed too (a machine that went down): seconds to the job ``running`` again in its next attempt."""
    attempt = client.job(job_id)["attempt"]
    server.kill()
    server.start(wait=False)
    adopted_health = server.wait_healthy()
    wait_for(lambda: (j := client.job(job_id))["state"] == "running" and j["attempt"] == attempt, 120,
             f"job {job_id} adopted")
    adopted = time.perf_counter() - server.started
    server.kill()
    for proc in job_processes(server.root / "jobs" / job_id):  # the job's processes: our server's children
        proc.kill()
    wait_for(lambda: not job_processes(server.root / "jobs" / job_id), 60, f"job {job_id}'s processes gone")
    server.start(wait=False)
    crashed_health = server.wait_healthy()
    wait_for(lambda: (j := client.job(job_id))["state"] == "running" and j["attempt"] == attempt + 1, 120,
             f"job {job_id} running again")
    return {"adopted_health_s": round(adopted_health, 3), "adopted_running_s": round(adopted, 3),
            "crashed_health_s": round(crashed_health, 3),
            "crashed_running_again_s": round(time.perf_counter() - server.started, 3)}


def run_bench(jobs: int, requests: int, sse_lines: int, delay_s: float) -> dict:
    from bench.generate import machine_info
    from service.client import Client

    with tempfile.TemporaryDirectory(prefix="rlaif-bench-service-") as tmp:
        folder = Path(tmp)
        server = LocalServer(folder, env={"RLAIF_FAKE_DELAY_S": str(delay_s)})
        try:
            startup_s = server.start(wait=False).wait_healthy()
            (server.data / "prompts.jsonl").write_text(PROMPTS)
            client = Client(server.url)
            recipe = fake_recipe("bench", server.data / "prompts.jsonl")
            post_s, submit_s, cancel_s = [], [], []
            out: dict = {"jobs": jobs, "fake_delay_s": delay_s, "startup_s": round(startup_s, 3)}
            for i in range(jobs):
                job_id, posted, seconds = submit_running(client, recipe)
                post_s.append(posted)
                submit_s.append(seconds)
                if i == 0:
                    out["list_jobs"] = list_latency(client, requests)
                    out["sse_line"] = sse_latency(client, server.root / "jobs" / job_id / "log", job_id, sse_lines)
                if i == jobs - 1:
                    out["restart"] = restart_reconciled(server, client, job_id)
                cancel_s.append(cancel_gone(client, job_id, server.root / "jobs" / job_id))
            out["submit_request"] = percentiles(post_s)
            out["submit_to_running"] = percentiles(submit_s)
            out["cancel_to_gone"] = percentiles(cancel_s)
            client.close()
        finally:
            server.stop()
    return {**out, "machine": machine_info()}


def bench_service(jobs: int = typer.Option(5, "--jobs", help="Jobs submitted one after another (each is "
                                           "cancelled once running: submit->running and cancel->gone samples)."),
                  requests: int = typer.Option(500, "--requests", help="GET /jobs requests timed while a job runs."),
                  sse_lines: int = typer.Option(50, "--sse-lines", help="Log lines timed through the event stream."),
                  delay_s: float = typer.Option(30.0, "--fake-delay", help="Seconds the fake engine sleeps per "
                                                "call, so a job stays running while it is measured."),
                  as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """The job service's latencies on fake-engine jobs: submit->running, GET /jobs requests/s (p50/p99), SSE line
    latency, cancel->gone and restart->reconciled; it starts and stops its own server on 127.0.0.1."""
    from bench.args import require_positive
    from bench.generate import stdout_to_stderr

    require_positive(jobs=jobs, requests=requests, sse_lines=sse_lines, fake_delay=delay_s)
    with stdout_to_stderr():
        result = run_bench(jobs, requests, sse_lines, delay_s)
    if as_json:
        typer.echo(json.dumps(result))
        return
    _print(result)


def _print(r: dict) -> None:
    from bench.generate import describe_machine

    def line(name: str, p: dict) -> str:
        return f"{name:24s} p50 {p['p50_ms']:9.2f} ms  p99 {p['p99_ms']:9.2f} ms  max {p['max_ms']:9.2f} ms  (n={p['n']})"

    typer.echo(f"server start -> /health   {r['startup_s']:.2f} s (fake engine, {r['fake_delay_s']} s per call)")
    typer.echo(line("POST /jobs (checked)", r["submit_request"]))
    typer.echo(line("submit -> running", r["submit_to_running"]))
    typer.echo(line("GET /jobs, job running", r["list_jobs"]) + f"  {r['list_jobs']['requests_per_s']} requests/s")
    typer.echo(line("log line -> SSE client", r["sse_line"]))
    typer.echo(line("cancel -> gone", r["cancel_to_gone"]))
    rs = r["restart"]
    typer.echo(f"restart, API SIGKILLed:          -> /health {rs['adopted_health_s']:.2f} s, -> job adopted "
               f"(running) {rs['adopted_running_s']:.2f} s")
    typer.echo(f"restart, API and job SIGKILLed:  -> /health {rs['crashed_health_s']:.2f} s, -> job running again "
               f"(next attempt) {rs['crashed_running_again_s']:.2f} s")
    typer.echo(describe_machine(r["machine"]))


def register(bench_app: typer.Typer) -> None:
    bench_app.command("service")(bench_service)
