"""The ``ray`` engine: ``replicas`` vLLM servers (``rlaif engine serve``) placed by Ray as actors, fed by the openai
engine's multi-replica client (generator/engines/openai_engine.py: round robin, retries, per-request seeds).

    engine: {engine: ray, replicas: 2, num_gpus: 1}          # a pipeline recipe's engine, or its judge: mapping
    rlaif judge --engine ray ...                              # one replica on the cluster of RAY_ADDRESS

The cluster is ``ray_address`` (any address ``ray.init`` takes), else ``RAY_ADDRESS`` (set in every Ray job's
driver, so a stage of a job the service submitted to Ray uses that cluster), else a Ray instance started for this
process. Each replica is an actor asking Ray for one CPU and ``num_gpus`` GPUs (Ray sets CUDA_VISIBLE_DEVICES
for it); it starts ``rlaif engine serve`` in a process group of its own on a free port of its node: 127.0.0.1
when the actor shares the driver's node, else the node's address, with a key drawn for this engine that every
request must send (it reaches the server in its environment, never on a command line). The engine waits until
every replica serves the model (or one's server exits: its last error line is the error), and then works as the
openai engine on the replicas' URLs.

No process outlives the engine (tests/test_ray.py): ``close`` stops every server (SIGTERM, a grace period,
SIGKILL to its process group) and kills the actors; the engine pool closes its engines when a stage ends, fails
or is cancelled (``rlaif run`` turns SIGTERM into SystemExit). A driver killed with SIGKILL cannot close
anything: Ray then kills the actors it owned, and each actor's watcher process (the watchdog of Ray's own job
supervisor, ray/dashboard/modules/job/job_supervisor.py) kills its server's process group once the actor's
process is gone.

Provenance: the engine kind (``ray``) and the model the servers serve (their /v1/models card), like the openai
engine; the replicas' addresses are a runtime matter and recorded nowhere.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from generator.engines.base import ChoiceScores, ClosingEngine, Completion, EngineError, Prompt, Sampling

log = logging.getLogger(__name__)

EXTRA = "pip install 'rlaif[ray]'"
STARTUP_ENV = "RLAIF_RAY_STARTUP_S"  # how long replicas may take to serve (a CPU server loads in minutes)
STARTUP_S = 1200.0
STOP_GRACE_S = 10.0
# Variables a replica takes from the driver's environment (Ray starts actors with the raylet's environment):
# settings, never secrets (Ray shows an actor's runtime environment on its dashboard).
PASSED_PREFIXES = ("RLAIF_", "VLLM_", "OMP_")
PASSED_NAMES = ("HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM")
SECRET_NAMES = ("VLLM_API_KEY", "RLAIF_SERVICE_TOKEN")
_RAY = {"engines": 0, "ours": False}  # ray engines open in this process; did one of them start Ray's connection?


class RaySettingsError(ValueError):
    """Ray settings that cannot work, or Ray missing: one line naming what to change."""


def require_ray(what: str = "engine ray") -> None:
    """One line naming the extra when Ray is not installed."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise RaySettingsError(f"{what} needs Ray, which is not installed; install the extra: {EXTRA}")


def check_ray_settings(engine: str, replicas: int | None, num_gpus: float | None, ray_address: str | None) -> None:
    """Refuse, before anything loads, Ray settings that cannot work (generator/engines/options.py calls this)."""
    given = [f for f, v in (("replicas", replicas), ("num_gpus", num_gpus), ("ray_address", ray_address))
             if v is not None]
    if engine != "ray":
        if given:
            raise RaySettingsError(f"{given[0]} is only used by the ray engine, but the engine is {engine!r}; "
                                   f"set engine: ray (--engine ray) or drop {given[0]}")
        return
    require_ray()
    if replicas is not None and replicas < 1:
        raise RaySettingsError(f"replicas {replicas}: the ray engine needs at least 1 replica")
    if num_gpus is not None and not (math.isfinite(num_gpus) and num_gpus >= 0):
        raise RaySettingsError(f"num_gpus {num_gpus}: give the GPUs of one replica, 0 or more (e.g. 1)")
    if ray_address is not None and (not ray_address.strip() or any(c.isspace() for c in ray_address)):
        raise RaySettingsError(f"ray_address {ray_address!r}: give a Ray address (auto, HOST:PORT or "
                               "ray://HOST:10001)")


def _passed_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if (k.startswith(PASSED_PREFIXES) or k in PASSED_NAMES) and k not in SECRET_NAMES}


class Replica:
    """One ``rlaif engine serve`` on the node Ray placed this actor on (made a Ray actor by ``ray.remote``)."""

    def __init__(self, serve_args: list[str], key: str, driver_node: str):
        import socket
        import tempfile

        import ray

        context = ray.get_runtime_context()
        self.host = "127.0.0.1" if context.get_node_id() == driver_node else ray.util.get_node_ip_address()
        with socket.socket() as s:
            s.bind((self.host, 0))
            self.port = s.getsockname()[1]
        # the server's output: a file without a name (it goes with the last process holding it, however it ends)
        self.log = tempfile.TemporaryFile(prefix="rlaif-replica-")
        argv = [sys.executable, "-m", "rlaif", "engine", "serve", "--host", self.host, "--port", str(self.port),
                *serve_args]
        self.server = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                       env={**os.environ, "VLLM_API_KEY": key}, start_new_session=True)
        watch = f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; kill -9 -{self.server.pid} 2>/dev/null"
        self.watcher = subprocess.Popen(["sh", "-c", watch], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)

    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def pids(self) -> list[int]:
        """This actor's process, its server's and its watcher's (tests check that none is left)."""
        return [os.getpid(), self.server.pid, self.watcher.pid]

    def exited(self) -> tuple[int | None, str]:
        """The server's exit code (None while it runs) and the last error line of its log."""
        code = self.server.poll()
        if code is None:
            return None, ""
        size = os.fstat(self.log.fileno()).st_size
        tail = os.pread(self.log.fileno(), 20000, max(0, size - 20000)).decode("utf-8", "replace")
        lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower()] or lines
        return code, (errors[-1] if errors else "no output")[:300]

    def stop(self, grace_s: float) -> None:
        """SIGTERM to the server's process group, ``grace_s``, SIGKILL to what is left of the group (the server,
        or its children: vLLM's engine core); the watcher too."""
        _signal_group(self.server.pid, signal.SIGTERM)
        try:
            self.server.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("replica server %d outlived SIGTERM by %.0f s; killing it", self.server.pid, grace_s)
        _signal_group(self.server.pid, signal.SIGKILL)
        self.server.wait()
        self.watcher.kill()
        self.watcher.wait()
        self.log.close()


class RayReplicasEngine(ClosingEngine):
    """The openai engine over ``replicas`` vLLM servers that Ray placed (see the module docstring)."""

    name = "ray"

    def __init__(self, model: str | None = None, *, replicas: int = 1, num_gpus: float = 0.0, num_cpus: float = 1.0,
                 ray_address: str | None = None, seed: int | None = None, startup_s: float | None = None,
                 serve_args: Sequence[str] = (), **openai_kwargs):
        from generator.models import display_name

        check_ray_settings("ray", replicas, num_gpus, ray_address)
        import ray

        self.model = display_name(model or "smollm2-135m")
        self.replicas, self.num_gpus = int(replicas), float(num_gpus or 0.0)
        self.actors: list = []
        self.inner = None
        where = ray_address or os.environ.get("RAY_ADDRESS") or "a new local instance"
        try:
            if not ray.is_initialized():
                _reachable(ray_address or os.environ.get("RAY_ADDRESS"))
                ray.init(address=ray_address, logging_level=logging.WARNING, log_to_driver=False)
                _RAY["ours"] = True
        except (ConnectionError, OSError, RuntimeError, ValueError) as e:
            raise EngineError(f"ray engine: cannot reach the Ray cluster at {where} ({_first_line(e)}); start one "
                              f"with `ray start --head` or fix ray_address / RAY_ADDRESS") from None
        _RAY["engines"] += 1
        self._open = True
        try:
            self._check_resources(ray, num_cpus)
            key = secrets.token_urlsafe(24)
            args = ["--model", model or "smollm2-135m", *(["--seed", str(seed)] if seed is not None else []),
                    *serve_args]
            actor = ray.remote(Replica).options(num_cpus=num_cpus, num_gpus=self.num_gpus, max_restarts=0,
                                                runtime_env={"env_vars": _passed_env()})
            driver_node = ray.get_runtime_context().get_node_id()
            self.actors = [actor.remote(args, key, driver_node) for _ in range(self.replicas)]
            urls = self._wait_serving(ray, key, float(startup_s or os.environ.get(STARTUP_ENV) or STARTUP_S))
            from generator.engines.openai_engine import OpenAIEngine

            self.inner = OpenAIEngine(model, base_urls=urls, api_key=key, seed=seed, **openai_kwargs)
            self.model = self.inner.model
        except BaseException:
            self.close()
            raise

    def _check_resources(self, ray, num_cpus: float) -> None:
        """Refuse replicas the cluster could never place (they would wait for resources forever)."""
        have = ray.cluster_resources()
        for resource, each in (("GPU", self.num_gpus), ("CPU", num_cpus)):
            if each and have.get(resource, 0.0) < each * self.replicas:
                raise EngineError(f"ray engine: {self.replicas} replica(s) x {each:g} {resource} do not fit the Ray "
                                  f"cluster's {have.get(resource, 0.0):g} {resource}; "
                                  + ("drop num_gpus on a CPU cluster, or add GPU nodes" if resource == "GPU"
                                     else "ask for fewer replicas, or add nodes"))

    def _wait_serving(self, ray, key: str, seconds: float) -> list[str]:
        """Every replica's URL once its server answers /v1/models; one line when one exits or time runs out."""
        import httpx

        deadline = time.monotonic() + seconds
        try:
            urls = ray.get([a.url.remote() for a in self.actors], timeout=seconds)
        except ray.exceptions.GetTimeoutError:
            raise EngineError(f"ray engine: the cluster did not place {self.replicas} replica(s) in {seconds:.0f} s "
                              f"(resources: {ray.available_resources()})") from None
        except ray.exceptions.RayError as e:
            raise EngineError(f"ray engine: a replica failed to start ({_first_line(e)})") from None
        waiting = dict(enumerate(urls))
        headers = {"Authorization": f"Bearer {key}"}
        while waiting:
            for i, url in list(waiting.items()):
                try:
                    if httpx.get(f"{url}/models", headers=headers, timeout=5).status_code == 200:
                        del waiting[i]
                        continue
                except httpx.HTTPError:
                    pass
                code, why = ray.get(self.actors[i].exited.remote())
                if code is not None:
                    raise EngineError(f"ray engine: replica {i}'s `rlaif engine serve` exited with code {code}: {why}")
            if waiting and time.monotonic() > deadline:
                raise EngineError(f"ray engine: {len(waiting)} replica(s) not serving after {seconds:.0f} s; set "
                                  f"{STARTUP_ENV} to wait longer")
            if waiting:
                time.sleep(1.0)
        return urls

    # -- the interface: the openai engine over the replicas --------------------------------------------------
    @property
    def served_card(self) -> dict:
        return self.inner.served_card

    @property
    def max_context(self) -> int | None:
        return self.inner.max_context

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[list[Completion]]:
        return self.inner.generate(prompts, sampling)

    def score_choices(self, prompts: Sequence[str], options: Sequence[str], top_k: int = 20) -> list[ChoiceScores]:
        return self.inner.score_choices(prompts, options, top_k)

    def count_tokens(self, prompt: Prompt) -> int:
        return self.inner.count_tokens(prompt)

    def stats(self) -> dict:
        stats = self.inner.stats() if self.inner is not None else {}
        stats.pop("hits", None)  # keyed by the replicas' addresses
        return {**stats, "replicas": self.replicas}

    def replica_pids(self) -> list[list[int]]:
        import ray

        return ray.get([a.pids.remote() for a in self.actors])

    def close(self) -> None:
        """Stop every server and kill the actors; calling it again does nothing."""
        import ray

        inner, self.inner = self.inner, None
        if inner is not None:
            inner.close()
        actors, self.actors = self.actors, []
        stops = [a.stop.remote(STOP_GRACE_S) for a in actors]
        for actor, stop in zip(actors, stops, strict=True):
            try:
                ray.get(stop, timeout=STOP_GRACE_S + 20)
            except ray.exceptions.RayError as e:  # the actor is gone: its watcher ends the server
                log.warning("ray engine: a replica did not stop cleanly (%s)", _first_line(e))
            ray.kill(actor)
        if getattr(self, "_open", False):
            self._open = False
            _RAY["engines"] -= 1
            if _RAY["engines"] == 0 and _RAY["ours"] and ray.is_initialized():  # the Ray this process started
                _RAY["ours"] = False
                ray.shutdown()


def _reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """Refuse a HOST:PORT (or ray://HOST:PORT) that takes no connection: ``ray.init`` retries one for minutes."""
    import socket
    from urllib.parse import urlsplit

    if not address or address == "auto":
        return
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as e:
        raise ValueError(f"not HOST:PORT ({e})") from None
    if host is None or port is None:
        return
    with socket.create_connection((host, port), timeout=timeout_s):
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:  # nothing of the group is left
        return


def _first_line(e: object) -> str:
    text = str(e).strip()
    return " ".join((text.splitlines() or [type(e).__name__])[0].split())[:300]
