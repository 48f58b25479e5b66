"""``rlaif bench ray``: the judge's comparisons/s on vLLM server replicas placed by Ray (the ``ray`` engine,
generator/engines/ray_replicas.py) against the same number of replicas started by hand and passed as base URLs
(the ``openai`` engine), for each replica count of ``--replicas``.

Both paths send the same requests through the same client (the ray engine is the openai engine over the
replicas' URLs), so the ratio measures what Ray's placement costs once the servers serve: the target is an
overhead within 5%. Startup (actors placed, models loaded) is reported apart, never mixed into the ratio.

Per replica count and path: the servers start, a warm-up pass on two other pairs (untimed) fills the prefix
cache with the constitution's shared few-shot text, then ``--repeats`` timed passes judge the same pairs in both
orders (bench/judge_speed.py ``logprob_pass``); the best pass counts, since other work on a shared machine only
ever slows a pass down. The servers of one path are stopped before the other path starts, so both see the same
cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import typer

from bench.judge import DEFAULT_DATA, WARMUP_PAIRS, load_pairs
from bench.judge_speed import logprob_pass

TARGET = 0.05  # the Ray path may be this much slower than the same replicas as base URLs


def register(bench_app: typer.Typer) -> None:
    bench_app.command("ray")(bench_ray)


def parse_counts(text: str) -> list[int]:
    from bench.args import BenchArgumentError

    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        counts = []
    if not counts or any(n < 1 for n in counts):
        raise BenchArgumentError(f"--replicas {text!r}: give replica counts of 1 or more, comma-separated (e.g. 1,2)")
    return counts


def check_cluster(ray_address: str | None) -> None:
    """Refuse a Ray address (``--ray-address``, else ``RAY_ADDRESS``) that takes no connection before any server
    starts: the base-URL path runs first, and the ray engine would find the cluster missing only after it."""
    from bench.args import BenchArgumentError
    from generator.engines.ray_replicas import _reachable

    where = ray_address or os.environ.get("RAY_ADDRESS")
    try:
        _reachable(where)
    except (OSError, ValueError) as e:
        flag = "--ray-address" if ray_address else "RAY_ADDRESS"
        raise BenchArgumentError(f"{flag} {where}: cannot reach the Ray cluster ({e}); start one with "
                                 "`ray start --head`, fix the address, or give none to start a local Ray") from None


class _Servers:
    """``n`` ``rlaif engine serve`` processes on 127.0.0.1, each in its own process group."""

    def __init__(self, n: int, model: str, seed: int, logs: Path):
        import socket

        self.procs, self.urls = [], []
        for i in range(n):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            with open(logs / f"server-{n}-{i}.log", "w") as out:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "rlaif", "engine", "serve", "--model", model, "--port", str(port),
                     "--seed", str(seed)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True))
            self.urls.append(f"http://127.0.0.1:{port}/v1")

    def wait(self, seconds: float = 1800) -> None:
        import httpx

        deadline = time.monotonic() + seconds
        for proc, url in zip(self.procs, self.urls, strict=True):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the server at {url} exited with code {proc.returncode}")
                try:
                    if httpx.get(f"{url}/models", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server at {url} did not serve in {seconds:.0f} s")
                time.sleep(1)

    def stop(self) -> None:
        """SIGTERM to each server's group, 30 s, SIGKILL to what is left of it (vLLM's engine core included)."""
        for proc in self.procs:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:  # nothing of the group is left
        return


def _passes(engine, const, warm, timed, config, repeats: int) -> tuple[float, list]:
    """(best seconds of ``repeats`` timed passes, p_a of the last) after one untimed warm-up pass."""
    logprob_pass(engine, const, warm, config)
    best, p_a = float("inf"), []
    for _ in range(repeats):
        seconds, p_a, _use = logprob_pass(engine, const, timed, config)
        best = min(best, seconds)
    return best, p_a


def _one_count(n: int, model: str, ray_address: str | None, const, warm, timed, config, repeats: int,
               logs: Path) -> dict:
    from generator.engines.openai_engine import OpenAIEngine
    from generator.engines.ray_replicas import RayReplicasEngine

    started = time.monotonic()
    servers = _Servers(n, model, config.seed, logs)
    try:
        servers.wait()
        startup_urls = time.monotonic() - started
        engine = OpenAIEngine(model, base_urls=servers.urls, seed=config.seed)
        try:
            t_urls, p_urls = _passes(engine, const, warm, timed, config, repeats)
        finally:
            engine.close()
    finally:
        servers.stop()
    started = time.monotonic()
    engine = RayReplicasEngine(model, replicas=n, ray_address=ray_address, seed=config.seed)
    try:
        startup_ray = time.monotonic() - started
        t_ray, p_ray = _passes(engine, const, warm, timed, config, repeats)
    finally:
        engine.close()
    comparisons = len(p_urls)
    diffs = [abs(a - b) for a, b in zip(p_urls, p_ray, strict=True) if a is not None and b is not None]
    return {"replicas": n, "comparisons": comparisons,
            "base_urls_per_s": round(comparisons / t_urls, 3), "ray_per_s": round(comparisons / t_ray, 3),
            "ray_overhead": round(t_ray / t_urls - 1, 4), "within_target": t_ray / t_urls - 1 <= TARGET,
            "seconds": {"base_urls": round(t_urls, 2), "ray": round(t_ray, 2)},
            "startup_seconds": {"base_urls": round(startup_urls, 1), "ray": round(startup_ray, 1)},
            "max_abs_diff_p_a": round(max(diffs), 6) if diffs else None}


def run_bench(counts: list[int], pairs: int, principles: int, model: str, data: Path, ray_address: str | None,
              repeats: int) -> dict:
    import tempfile

    from bench.generate import machine_info, stdout_to_stderr
    from constitution import DEFAULT_PATH, load_constitution
    from judge.config import JudgeConfig

    const = load_constitution(DEFAULT_PATH)
    every = load_pairs(data, pairs + WARMUP_PAIRS)
    timed, warm = every[:pairs], every[pairs:]
    config = JudgeConfig(model=model, principles_per_pair=principles, orders="both")
    with stdout_to_stderr(), tempfile.TemporaryDirectory(prefix="rlaif-bench-ray-") as logs:
        runs = [_one_count(n, model, ray_address, const, warm, timed, config, repeats, Path(logs)) for n in counts]
    return {"model": model, "pairs": pairs, "principles": principles, "orders": 2, "repeats": repeats,
            "target_overhead": TARGET, "runs": runs, "machine": machine_info()}


def bench_ray(
    replicas: str = typer.Option("1,2", "--replicas", help="Replica counts to measure (comma-separated)."),
    pairs: int = typer.Option(16, help="HH-RLHF pairs to judge (chosen vs rejected final replies)."),
    principles: int = typer.Option(2, help="Principles per pair (each scored in both orders)."),
    model: str = typer.Option("smollm2-135m", help="Judge model."),
    data: Path = typer.Option(DEFAULT_DATA, help="HH-RLHF jsonl(.gz) with chosen/rejected transcripts."),
    ray_address: str = typer.Option(None, "--ray-address", help="The Ray cluster (default RAY_ADDRESS, else a "
                                    "Ray instance started for this command)."),
    repeats: int = typer.Option(2, help="Timed passes per path; the best counts."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Judge comparisons/s on Ray-placed replicas vs the same replicas as --base-url, per replica count."""
    from bench.args import require_positive
    from bench.generate import describe_machine
    from generator.engines.ray_replicas import check_ray_settings
    from generator.models import check_local_model

    require_positive(pairs=pairs, principles=principles, repeats=repeats)
    counts = parse_counts(replicas)
    check_local_model(model)
    check_cluster(ray_address)  # before Ray's own checks: an address that takes no connection is refused as such
    check_ray_settings("ray", max(counts), None, ray_address)
    result = run_bench(counts, pairs, principles, model, data, ray_address, repeats)
    if as_json:
        typer.echo(json.dumps(result))
        return
    for r in result["runs"]:
        typer.echo(f"{r['replicas']} replica(s): Ray {r['ray_per_s']} comparisons/s, base URLs "
                   f"{r['base_urls_per_s']} comparisons/s, Ray overhead {r['ray_overhead']:+.1%} (target "
                   f"<= {TARGET:.0%}: {'met' if r['within_target'] else 'missed'}); startup Ray "
                   f"{r['startup_seconds']['ray']} s, base URLs {r['startup_seconds']['base_urls']} s")
    typer.echo(describe_machine(result["machine"]))
