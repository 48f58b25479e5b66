"""Ray: the job service's Ray backend (service/ray_backend.py) and the ray engine (generator/engines/ray_replicas.py),
against a real local Ray cluster each test module starts itself: ``ray start --head --block`` on 127.0.0.1 in a
process group and a temporary folder of its own, 2 CPUs, no usage stats, RAY_ADDRESS left out of every process's
environment but where a test sets it. It is stopped by its process group (SIGTERM, then SIGKILL), and every
process whose command line names its folder is killed after that: ``ray stop`` would stop every Ray on the
machine. Ray's memory monitor is off in it: it counts the whole machine's memory, which other programs share, and
killed the replicas' actors when they did not use it.

A job's processes are found in /proc by the test (tests/test_service.py ``job_processes``); a replica's as every
process below a ``ray::Replica`` actor and in their process groups.

The quick tests need no cluster: Ray hidden (``sys.modules['ray'] = None``), addresses nothing answers, values
that cannot work, and the entrypoint's cancel marker."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from conftest import BASE_ENV, ROOT, free_port
from test_service import (
    WAIT_S,
    Served,
    fake_recipe,
    job_processes,
    prompts,
    rlaif_run,
    rows,
    same_rows,
)

RAY = Path(sys.executable).with_name("ray")
CLUSTER_ENV = {**{k: v for k, v in BASE_ENV.items() if k != "RAY_ADDRESS"}, "RAY_memory_monitor_refresh_ms": "0",
               "RAY_USAGE_STATS_ENABLED": "0", "OMP_WAIT_POLICY": "PASSIVE"}


# --- a local Ray cluster ------------------------------------------------------------------------------------------

class Cluster:
    """``ray start --head --block`` on 127.0.0.1 (a GCS port and a dashboard port of its own)."""

    def __init__(self, gcs_port: int | None = None, dashboard_port: int | None = None):
        self.gcs_port, self.dashboard_port = gcs_port or free_port(), dashboard_port or free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="rlaif-ray-", dir="/tmp"))  # short: Ray's socket paths
        cmd = [str(RAY), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(self.gcs_port),
               "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard_port), "--num-cpus", "2",
               "--disable-usage-stats", "--temp-dir", str(self.folder), "--ray-client-server-port", str(free_port()),
               # ports of their own, not Ray's defaults: another cluster of the tests may hold those (a head whose
               # dashboard agent cannot listen takes no job: "No available agent to submit job")
               "--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port())]
        self.out = self.folder / "ray-start.log"
        with open(self.out, "w") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                         env=CLUSTER_ENV, cwd=str(self.folder))
        deadline = time.monotonic() + WAIT_S
        while True:
            assert self.proc.poll() is None, f"ray start exited:\n{self.out.read_text()[-3000:]}"
            try:
                if httpx.get(f"{self.dashboard}/api/version", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"Ray did not start:\n{self.out.read_text()[-3000:]}"
            time.sleep(0.5)

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def gcs(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    def client(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.dashboard)

    def processes(self) -> set[int]:
        mine = set()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if str(self.folder).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    mine.add(int(pid))
            except OSError:
                continue
        return mine

    def stop(self) -> None:
        """The group SIGTERMed, 15 s, SIGKILLed; then whatever names the cluster's folder; none may be left."""
        for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                continue
        self.proc.wait()
        deadline = time.monotonic() + 30
        while left := self.processes() - {os.getpid()}:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            assert time.monotonic() < deadline, f"Ray processes left: {left}"
            time.sleep(0.2)
        shutil.rmtree(self.folder, ignore_errors=True)  # Ray's session logs and sockets


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray")
    c = Cluster()
    yield c
    c.stop()


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def replica_processes() -> set[int]:
    """Every ``ray::Replica`` actor process, every process below one, and every process in their groups."""
    procs = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            raw = Path(f"/proc/{pid}/stat").read_bytes()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        fields = raw[raw.rindex(b")") + 2:].split()
        if fields[0] != b"Z":
            procs[int(pid)] = (int(fields[1]), int(fields[2]), cmd)
    found = {pid for pid, (_, _, cmd) in procs.items() if cmd.startswith(b"ray::Replica")}
    while kids := {pid for pid, (ppid, _, _) in procs.items() if ppid in found} - found:
        found |= kids
    groups = {procs[pid][1] for pid in found}
    return found | {pid for pid, (_, pgid, _) in procs.items() if pgid in groups and pgid != os.getpgrp()}


def _gone(pids: set[int], seconds: float = 120) -> set[int]:
    deadline = time.monotonic() + seconds
    while (left := {p for p in pids if _alive(p)}) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


# --- quick: bad inputs without a cluster --------------------------------------------------------------------------

def _rlaif_without_ray(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``rlaif ARGS`` in a Python where ``import ray`` fails as if Ray were not installed."""
    code = ("import sys; sys.modules['ray'] = None; sys.argv = ['rlaif', *sys.argv[1:]]; "
            "from rlaif.cli import main; main()")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          env=BASE_ENV, cwd=str(cwd))


def _one_line(res: subprocess.CompletedProcess) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-3000:]
    return lines[0]


def _ray_recipe(tmp_path: Path, judge: str, name: str = "recipe.yaml") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "p.jsonl").write_bytes(prompts(4))
    recipe = tmp_path / name
    recipe.write_text(f"name: ray\nroot: {tmp_path / 'root'}\nprompts: {tmp_path / 'p.jsonl'}\n"
                      f"stages: [generate, judge]\nengine: {{engine: fake, batch_size: 2}}\njudge: {judge}\n")
    return recipe


def test_the_ray_engine_without_ray_installed_is_one_line_naming_the_extra(tmp_path):
    recipe = _ray_recipe(tmp_path, "{engine: ray, replicas: 2}")
    line = _one_line(_rlaif_without_ray("run", str(recipe)))
    assert "needs Ray, which is not installed" in line and "rlaif[ray]" in line
    assert not (tmp_path / "root").exists()
    line = _one_line(_rlaif_without_ray("generate", "--prompts", str(tmp_path / "p.jsonl"), "--out",
                                        str(tmp_path / "gen"), "--engine", "ray"))
    assert "rlaif[ray]" in line and not (tmp_path / "gen").exists()


def test_the_ray_backend_without_ray_installed_is_one_line_naming_the_extra(tmp_path):
    line = _one_line(_rlaif_without_ray("serve", "--root", str(tmp_path / "svc"), "--port", str(free_port()),
                                        "--backend", "ray", "--ray-address", "http://127.0.0.1:8265"))
    assert "needs Ray, which is not installed" in line and "rlaif[ray]" in line
    assert not (tmp_path / "svc").exists()


@pytest.mark.parametrize("judge, says", [
    ("{engine: ray, replicas: 0}", "replicas 0: the ray engine needs at least 1 replica"),
    ("{engine: ray, num_gpus: -1}", "num_gpus -1.0: give the GPUs of one replica"),
    ("{engine: fake, replicas: 2}", "replicas is only used by the ray engine"),
    ("{engine: vllm, ray_address: 'auto'}", "ray_address is only used by the ray engine"),
])
def test_ray_settings_that_cannot_work_are_one_line_before_anything_runs(tmp_path, run_cli, judge, says):
    recipe = _ray_recipe(tmp_path, judge)
    line = _one_line(run_cli("run", str(recipe)))
    assert says in line
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("command", ["generate", "judge", "eval"])
def test_the_replicas_flag_with_another_engine_is_one_line(tmp_path, run_cli, command):
    (tmp_path / "p.jsonl").write_bytes(prompts(2))
    where = {"generate": ["--prompts", str(tmp_path / "p.jsonl")], "judge": ["--input", str(tmp_path / "p.jsonl")],
             "eval": ["--prompts", str(tmp_path / "p.jsonl"), "--policy", "smollm2-135m", "--reference",
                      "smollm2-135m"]}[command]
    line = _one_line(run_cli(command, *where, "--out", str(tmp_path / "out"), "--engine", "fake", "--replicas", "2"))
    assert "replicas is only used by the ray engine" in line and not (tmp_path / "out").exists()


def test_the_shipped_ray_recipe_loads_with_ray_engines(tmp_path):
    pytest.importorskip("ray")
    from pipeline.recipe import load_pipeline

    (tmp_path / "p.jsonl").write_bytes(prompts(2))
    recipe = load_pipeline(ROOT / "recipes" / "pipeline-ray-gpu.yaml", [f"root={tmp_path / 'root'}",
                                                                        f"prompts={tmp_path / 'p.jsonl'}"])
    assert (recipe.engine.engine_name(), recipe.engine.replicas, recipe.engine.num_gpus) == ("ray", 4, 1)
    assert recipe.options("judge")["replicas"] == 2


@pytest.mark.parametrize("args, says", [
    (["--backend", "ray"], "--backend ray with --ray-address"),
    (["--ray-address", "http://127.0.0.1:8265"], "--backend ray with --ray-address"),
    (["--backend", "slurm"], "give --backend local, or --backend ray"),
    (["--backend", "ray", "--ray-address", "127.0.0.1:6379"], "give the Ray dashboard's URL"),
])
def test_serve_backend_options_that_cannot_work_are_one_line(tmp_path, run_cli, args, says):
    pytest.importorskip("ray")
    line = _one_line(run_cli("serve", "--root", str(tmp_path / "svc"), "--port", str(free_port()), *args))
    assert says in line and not (tmp_path / "svc").exists()


def test_an_address_nothing_answers_is_one_line_for_the_service_and_the_engine(tmp_path, run_cli):
    pytest.importorskip("ray")
    port = free_port()  # nothing listens there
    line = _one_line(run_cli("serve", "--root", str(tmp_path / "svc"), "--port", str(free_port()),
                             "--backend", "ray", "--ray-address", f"http://127.0.0.1:{port}"))
    assert f"--ray-address http://127.0.0.1:{port}: no Ray cluster answers there" in line
    assert not (tmp_path / "svc").exists()
    recipe = _ray_recipe(tmp_path, f"{{engine: ray, ray_address: '127.0.0.1:{port}'}}")
    line = _one_line(run_cli("run", str(recipe), env={"RAY_ADDRESS": ""}))
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in line
    assert not (tmp_path / "root" / "judge" / "data").exists() or not any((tmp_path / "root" / "judge" / "data")
                                                                         .iterdir())


@pytest.mark.parametrize("counts", ["0", "1,x", ""])
def test_bench_ray_replica_counts_that_cannot_work_are_one_line(run_cli, counts):
    assert "--replicas" in _one_line(run_cli("bench", "ray", "--replicas", counts))


def test_an_attempt_cancelled_before_ray_started_it_runs_nothing(tmp_path):
    from service.ray_backend import CANCEL, main

    (tmp_path / CANCEL).write_text("3")
    witness = tmp_path / "ran"
    command = [sys.executable, "-c", f"open({str(witness)!r}, 'w').close()"]
    assert main([str(tmp_path), "3", "--", *command]) == 143 and not witness.exists()
    assert main([str(tmp_path), "4", "--", *command]) == 0 and witness.exists()  # another attempt's marker


# --- the service on the Ray backend -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The rows of `rlaif run` of the fake recipe outside any service."""
    base = tmp_path_factory.mktemp("reference")
    (base / "p.jsonl").write_bytes(prompts(8))
    return rlaif_run(fake_recipe(str(base / "p.jsonl"), batch_size=1, judge_batch_size=8), base / "direct")


def _serve(root: Path, cluster: Cluster, delay: str = "0.0") -> Served:
    return Served(root, "--backend", "ray", "--ray-address", cluster.dashboard, "--grace", "3",
                  env={"RLAIF_FAKE_DELAY_S": delay})


def _submit(served: Served) -> tuple[dict, Path]:
    job = served.submit(fake_recipe(served.upload("p.jsonl", prompts(8)), batch_size=1, judge_batch_size=8))
    return job, served.root / "jobs" / job["id"]


@pytest.mark.integration
def test_a_job_on_ray_ends_with_the_rows_of_rlaif_run(tmp_path, cluster, reference):
    served = _serve(tmp_path / "root", cluster)
    try:
        job, job_dir = _submit(served)
        done = served.end(job["id"])
        log = served.log(job["id"])
    finally:
        served.stop()
    assert done["state"] == "succeeded" and done["exit_code"] == 0 and done["attempt"] == 1, log
    assert cluster.client().get_job_info(job["id"]).status.value == "SUCCEEDED"
    assert "[service] attempt 1 ended: exit code 0" in log and "report:" in log  # Ray's log of the driver
    same_rows(job_dir / "run", reference)
    assert not job_processes(job_dir)


@pytest.mark.integration
def test_cancel_stops_the_ray_job_and_leaves_no_process(tmp_path, cluster):
    served = _serve(tmp_path / "root", cluster, delay="1.0")
    try:
        job, job_dir = _submit(served)
        data = job_dir / "run" / "generate" / "data"
        served.wait(job["id"], lambda j: data.is_dir() and any(data.iterdir()))
        assert job_processes(job_dir)
        r = served.http.post(f"/jobs/{job['id']}/cancel")
        assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
    finally:
        served.stop()
    assert cluster.client().get_job_info(job["id"]).status.value == "STOPPED"
    assert not job_processes(job_dir)


@pytest.mark.integration
def test_a_ray_job_that_dies_fails_in_one_line(tmp_path, cluster):
    served = _serve(tmp_path / "root", cluster, delay="1.0")
    try:
        job, job_dir = _submit(served)
        data = job_dir / "run" / "generate" / "data"
        served.wait(job["id"], lambda j: data.is_dir() and any(data.iterdir()))
        for pid in job_processes(job_dir):
            os.kill(pid, signal.SIGKILL)
        done = served.end(job["id"])
    finally:
        served.stop()
    assert done["state"] == "failed" and done["exit_code"] == 137, done
    assert done["error"] and "\n" not in done["error"], done
    assert cluster.client().get_job_info(job["id"]).status.value == "FAILED"


@pytest.mark.integration
def test_a_killed_service_adopts_its_ray_job(tmp_path, cluster, reference):
    first = _serve(tmp_path / "root", cluster, delay="0.5")
    job, job_dir = _submit(first)
    data = job_dir / "run" / "generate" / "data"
    first.wait(job["id"], lambda j: data.is_dir() and any(data.iterdir()))
    first.stop(signal.SIGKILL)
    second = _serve(tmp_path / "root", cluster)
    try:
        done = second.end(job["id"])
        log = second.log(job["id"])
    finally:
        second.stop()
    assert done["state"] == "succeeded" and done["attempt"] == 1, log
    assert "the service restarted; it adopted the running job" in log
    assert log.count("[service] attempt 1 started") == 1  # each line of Ray's log copied once
    same_rows(job_dir / "run", reference)


@pytest.mark.integration
def test_a_job_the_restarted_head_lost_is_interrupted_and_resumes(tmp_path, reference):
    pytest.importorskip("ray")
    head = Cluster()
    served = _serve(tmp_path / "root", head, delay="0.5")
    try:
        job, job_dir = _submit(served)
        data = job_dir / "run" / "generate" / "data"
        served.wait(job["id"], lambda j: data.is_dir() and any(data.iterdir()))
        served.stop(signal.SIGKILL)
        head.stop()  # a head without GCS fault tolerance loses its drivers
        assert not job_processes(job_dir)
        head = Cluster(head.gcs_port, head.dashboard_port)
        served = _serve(tmp_path / "root", head)
        done = served.end(job["id"])
        log = served.log(job["id"])
    finally:
        served.stop()
        head.stop()
    assert done["state"] == "succeeded" and done["attempt"] == 2, log
    assert "attempt 1 was interrupted (its processes are gone); it resumes" in log
    same_rows(job_dir / "run", reference)


# --- the ray engine -----------------------------------------------------------------------------------------------

JUDGE = "{engine: %s, model: smollm2-135m, principles_per_pair: 2, seed: 3, batch_size: 8%s}"


@pytest.mark.integration
@pytest.mark.timeout(2400)
def test_a_judge_on_two_ray_replicas_equals_one_in_process_engine(tmp_path, cluster, run_cli):
    one = _ray_recipe(tmp_path / "one", JUDGE % ("vllm", ""))
    two = _ray_recipe(tmp_path / "two", JUDGE % ("ray", f", replicas: 2, ray_address: '{cluster.gcs}'"))
    run_cli("run", str(one), check=True, timeout=1500)
    before = replica_processes()
    run_cli("run", str(two), check=True, timeout=1500)
    a, b = rows(tmp_path / "one" / "root" / "judge"), rows(tmp_path / "two" / "root" / "judge")
    assert len(a) == len(b) == 4
    for x, y in zip(a, b, strict=True):
        # one vLLM build on both sides, float32 logits: the server's option logprobs differ from the in-process
        # engine's only by kernel rounding (tests/test_engines.py), far below what moves a label
        assert x["p_chosen"] == pytest.approx(y["p_chosen"], abs=1e-4)
        for vx, vy in zip(x["votes"], y["votes"], strict=True):
            assert vx["p_a"] == pytest.approx(vy["p_a"], abs=1e-4)
        same = {k for k in x if k not in ("p_chosen", "votes")}
        assert {k: x[k] for k in same} == {k: y[k] for k in same}
    assert replica_processes() - before == set()
    import json

    manifest = json.loads((tmp_path / "two" / "root" / "judge" / "manifest.json").read_text())
    text = json.dumps(manifest)
    assert manifest["spec"]["engine"] == "ray" and manifest["spec"]["model"] == "smollm2-135m"
    assert "127.0.0.1:" not in text.replace(cluster.gcs, "")  # no replica address recorded


@pytest.mark.integration
def test_replicas_of_a_driver_killed_with_sigkill_are_all_gone(tmp_path, cluster):
    recipe = _ray_recipe(tmp_path, JUDGE % ("ray", f", replicas: 2, ray_address: '{cluster.gcs}'"))
    before = replica_processes()
    log = tmp_path / "run.log"
    with open(log, "w") as fh:
        driver = subprocess.Popen([sys.executable, "-m", "rlaif", "run", str(recipe)], stdout=fh, stderr=fh,
                                  env=BASE_ENV, cwd=str(ROOT))
    deadline = time.monotonic() + WAIT_S
    while len(servers := {p for p in replica_processes() - before
                          if b"api_server" in Path(f"/proc/{p}/cmdline").read_bytes()}) < 2:
        assert driver.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no replica servers started:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)
    started = replica_processes() - before
    assert servers <= started
    driver.kill()
    driver.wait()
    assert _gone(started) == set()


@pytest.mark.integration
def test_num_gpus_on_a_cpu_cluster_is_one_line(tmp_path, cluster, run_cli):
    recipe = _ray_recipe(tmp_path, JUDGE % ("ray", f", num_gpus: 1, ray_address: '{cluster.gcs}'"))
    before = replica_processes()
    line = _one_line(run_cli("run", str(recipe)))
    assert "1 replica(s) x 1 GPU do not fit the Ray cluster's 0 GPU; drop num_gpus on a CPU cluster" in line
    assert replica_processes() - before == set()



@pytest.mark.integration
def test_a_replica_whose_server_cannot_start_is_one_line_with_the_servers_reason(tmp_path, cluster, run_cli):
    judge = f"{{engine: ray, model: {tmp_path / 'no-such-model'}, ray_address: '{cluster.gcs}'}}"
    recipe = _ray_recipe(tmp_path, judge)
    before = replica_processes()
    line = _one_line(run_cli("run", str(recipe)))
    assert "replica 0's `rlaif engine serve` exited with code 2" in line and "no such model folder" in line, line
    assert _gone(replica_processes() - before, 60) == set()
