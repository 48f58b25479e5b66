"""The job service (``rlaif serve``) as a user meets it: a real service subprocess on 127.0.0.1, real HTTP, real
job processes (``rlaif run`` on the fake engine, ``RLAIF_FAKE_DELAY_S`` so a job is still running when a test acts
on it). A job's processes are found in /proc by the test itself, not by the service's code: every process whose
command line names the job's folder, and every process in their sessions.

The crash tests (the service SIGKILLed mid-job) are in tests/test_service_recovery.py."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import BASE_ENV, free_port

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_PROMPTS = ROOT / "pipeline" / "data" / "demo_prompts.jsonl"
ENDED = ("succeeded", "failed", "cancelled")
WAIT_S = 300  # a bound on waits for what a loaded 2-core box may take long to do (never a speed check)


def prompts(n: int) -> bytes:
    return b"".join(b'{"prompt": "Question %d: how do I keep basil alive?"}\n' % i for i in range(n))


def fake_recipe(prompts_path: str, name: str = "fake", batch_size: int = 2, judge_batch_size: int | None = None) -> str:
    """generate -> judge on the fake engine (tests/test_user_files.py's recipe without publish)."""
    return (f"name: {name}\nroot: ignored-the-service-sets-it\nprompts: {prompts_path}\nstages: [generate, judge]\n"
            f"engine: {{engine: fake, batch_size: {batch_size}}}\n"
            f"judge: {{engine: fake, batch_size: {judge_batch_size or batch_size}}}\n")


class Served:
    """A ``rlaif serve`` subprocess and an HTTP client of it."""

    def __init__(self, root: Path, *args: str, env: dict | None = None, token: str | None = None,
                 wait: bool = True):
        """Start the service; with ``wait`` (the default) return once it answers, else call ``ready``."""
        self.root, self.port = root, free_port()
        self.out = root.parent / f"{root.name}-serve-{self.port}.log"
        root.parent.mkdir(parents=True, exist_ok=True)
        with open(self.out, "w") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "rlaif", "serve", "--root", str(root), "--port",
                                          str(self.port), *args], cwd=str(ROOT), stdout=fh, stderr=fh,
                                         env={**BASE_ENV, **(env or {})})
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}/api/v1", timeout=60, headers=headers,
                                 trust_env=False)
        if wait:
            self.ready()

    def ready(self) -> Served:
        """Wait until the service answers (it failing to start fails the test with its output)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            assert self.proc.poll() is None, f"rlaif serve exited:\n{self.out.read_text()[-3000:]}"
            try:
                self.http.get("/health")
                return self
            except httpx.TransportError:
                assert time.monotonic() < deadline, f"rlaif serve did not answer:\n{self.out.read_text()[-3000:]}"
                time.sleep(0.1)

    def cancel_all(self) -> None:
        """Leave no job of this service running behind (nothing to do once it stopped)."""
        if self.proc.poll() is None:
            for job in self.http.get("/jobs").json()["jobs"]:
                if job["state"] not in ENDED:
                    self.http.post(f"/jobs/{job['id']}/cancel")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.http.close()

    def upload(self, name: str, data: bytes) -> str:
        r = self.http.post("/uploads", params={"name": name}, content=data)
        assert r.status_code == 201, r.text
        return r.json()["path"]

    def submit(self, recipe: str, overrides: list[str] | None = None) -> dict:
        r = self.http.post("/jobs", json={"recipe": recipe, "overrides": overrides or []})
        assert r.status_code == 201, r.text
        return r.json()

    def job(self, job_id: str) -> dict:
        r = self.http.get(f"/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, job_id: str, until) -> dict:
        """Poll the job until ``until(job)``; a job that ended otherwise fails the test with its log."""
        deadline = time.monotonic() + WAIT_S
        while True:
            job = self.job(job_id)
            if until(job):
                return job
            assert job["state"] not in ENDED, f"job ended {job['state']}: {job['error']}\n{self.log(job_id)}"
            assert time.monotonic() < deadline, f"job stuck in {job['state']}\n{self.log(job_id)}"
            time.sleep(0.2)

    def log(self, job_id: str) -> str:
        return self.http.get(f"/jobs/{job_id}/log").text

    def end(self, job_id: str) -> dict:
        return self.wait(job_id, lambda j: j["state"] in ENDED)


def _stat(pid: str) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return raw[raw.rindex(b")") + 2:].decode().split()


def job_processes(job_dir: Path) -> set[int]:
    """Live processes of a job, read from /proc: those whose command line names its folder, every process in their
    sessions (the job is one session) and every descendant of them (one that left the session included)."""
    procs = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        fields = _stat(pid)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if fields and fields[0] != "Z":
            procs[int(pid)] = (int(fields[1]), int(fields[3]), cmdline)
    found = {pid for pid, (_, _, cmd) in procs.items() if str(job_dir).encode() in cmd}
    sessions = {procs[pid][1] for pid in found}
    found |= {pid for pid, (_, sid, _) in procs.items() if sid in sessions}
    while kids := {pid for pid, (ppid, _, _) in procs.items() if ppid in found} - found:
        found |= kids
    return found


def cmdlines(pids: set[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            pass
    return out


def rows(run_dir: Path) -> list[dict]:
    from plumbing.runs import load

    return sorted(load(run_dir).to_list(), key=lambda r: r["id"])


class Reference:
    """``rlaif run`` on the same recipe outside the service (no fake delay), started at once: calling it waits for
    it and gives its root, the reference rows, made while the test's own job runs."""

    def __init__(self, recipe_text: str, root: Path):
        root.parent.mkdir(parents=True, exist_ok=True)
        recipe = root.parent / f"{root.name}.yaml"
        recipe.write_text(recipe_text)
        env = {k: v for k, v in BASE_ENV.items() if k != "RLAIF_FAKE_DELAY_S"}
        self.root, self.out = root, root.parent / f"{root.name}.out"
        with open(self.out, "w") as fh:  # a file, not a pipe: nobody reads it while the test does other things
            self.proc = subprocess.Popen([sys.executable, "-m", "rlaif", "run", str(recipe), "--root", str(root)],
                                         cwd=str(ROOT), stdout=fh, stderr=fh, env=env)

    def __call__(self) -> Path:
        try:
            code = self.proc.wait(timeout=WAIT_S)
        finally:
            self.close()
        assert code == 0, self.out.read_text()[-3000:]
        return self.root

    def close(self) -> None:
        """Ended, if the test stopped before it needed the rows."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()



def rlaif_run(recipe_text: str, root: Path) -> Path:
    """``rlaif run`` on the same recipe outside the service (no fake delay): the reference rows."""
    return Reference(recipe_text, root)()


def same_rows(a: Path, b: Path, stages=("generate", "judge")) -> None:
    for stage in stages:
        left, right = rows(a / stage), rows(b / stage)
        assert left and left == right, stage


# --- the services of this module: an open one for most tests, one that requires a token ---------------------------

TOKEN, HUB = "svc-" + "Q7" * 16, "hf_" + "Zx9" * 12


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """Both services of the module, started at once (each start imports FastAPI and the pipeline). The token
    service has a folder of its own: its test reads every file in it for the token."""
    base, guarded_base = tmp_path_factory.mktemp("service"), tmp_path_factory.mktemp("token-service")
    (base / "data").mkdir()
    env = {"RLAIF_SERVICE_TOKEN": TOKEN, "HF_TOKEN": HUB, "RLAIF_FAKE_DELAY_S": "0.1", "OMP_WAIT_POLICY": ""}
    started = [Served(base / "root", "--max-queued", "20", "--data-dir", str(base / "data"),
                      env={"RLAIF_FAKE_DELAY_S": "0.1"}, wait=False),
               Served(guarded_base / "root", "--host", "127.0.0.1", env=env, token=TOKEN, wait=False)]
    try:
        for served in started:
            served.ready()
        started[0].base, started[1].base = base, guarded_base
        yield started
    finally:
        for served in started:
            served.cancel_all()
            served.stop()


@pytest.fixture(scope="module")
def svc(services):
    return services[0]


def test_a_job_runs_to_the_end_with_the_rows_of_rlaif_run(svc, request):
    """Submit -> queued with the dry run's plan -> followed to the end -> succeeded; the run folder holds the rows
    `rlaif run` writes on the same recipe, and each stage's progress is read from it."""
    recipe = fake_recipe(svc.upload("eight.jsonl", prompts(8)))
    job = svc.submit(recipe)
    reference = Reference(recipe, svc.base / "direct")
    request.addfinalizer(reference.close)
    assert job["state"] == "queued" and job["attempt"] == 0
    assert [(s["stage"], s["action"]) for s in job["plan"]] == [("generate", "run"), ("judge", "run")]
    done = svc.end(job["id"])
    assert done["state"] == "succeeded" and done["exit_code"] == 0 and done["error"] is None, svc.log(job["id"])
    assert {s: (v["state"], v["counts"].get("train")) for s, v in done["stages"].items()} == {
        "generate": ("done", 8), "judge": ("done", 8)}
    run = svc.root / "jobs" / job["id"] / "run"
    same_rows(run, reference())
    listed = {f["path"] for f in svc.http.get(f"/jobs/{job['id']}/files").json()["files"]}
    assert {"report.md", "pipeline.json", "generate/manifest.json"} <= listed
    report = svc.http.get(f"/jobs/{job['id']}/files/report.md")
    assert report.status_code == 200 and report.text == (run / "report.md").read_text()
    for escape in ("../recipe.yaml", "%2e%2e/recipe.yaml", "..%2f..%2fservice.db"):
        r = svc.http.get(f"/jobs/{job['id']}/files/{escape}")
        assert r.status_code in (400, 404) and "error" in r.json(), escape


def test_cancel_ends_every_process_and_retry_resumes(svc):
    """A running job cancelled: the answer comes within 10 s, says cancelled, and no process of the job is left;
    a retry resumes from the run folder (the shards written before the cancel are kept) and succeeds."""
    recipe = fake_recipe(svc.upload("sixteen.jsonl", prompts(16)), name="cancelled", batch_size=1,
                         judge_batch_size=16)
    job = svc.submit(recipe)
    job_dir = svc.root / "jobs" / job["id"]
    svc.wait(job["id"], lambda j: (job_dir / "run" / "generate" / "data").is_dir()
             and any((job_dir / "run" / "generate" / "data").iterdir()))
    before = job_processes(job_dir)
    assert len(before) >= 2, before  # the runner and rlaif run
    r = svc.http.post(f"/jobs/{job['id']}/cancel", timeout=10)
    assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
    assert job_processes(job_dir) == set() and all(not Path(f"/proc/{p}").exists() or _stat(str(p)) is None
                                                   or _stat(str(p))[0] == "Z" for p in before)
    assert svc.http.post(f"/jobs/{job['id']}/cancel").status_code == 409
    kept = len(list((job_dir / "run" / "generate" / "data").iterdir()))
    retried = svc.http.post(f"/jobs/{job['id']}/retry")
    assert retried.status_code == 200 and retried.json()["state"] == "queued"
    done = svc.end(job["id"])
    assert done["state"] == "succeeded" and done["attempt"] == 2, svc.log(job["id"])
    log = svc.log(job["id"])
    second = log[log.index("attempt 2 started"):]
    assert "generate  resume" in second and kept >= 1
    assert [r["id"] for r in rows(job_dir / "run" / "generate")] == sorted({r["id"] for r in rows(job_dir / "run" /
                                                                                                "generate")})
    assert len(rows(job_dir / "run" / "generate")) == 16


def test_event_stream_resumes_after_the_last_event_id(svc):
    """A client that drops the stream after a few lines and reconnects with Last-Event-ID gets every log line
    exactly once, in order, and the stream ends with the job's final state."""
    job = svc.submit(fake_recipe(svc.upload("six.jsonl", prompts(6)), name="streamed", batch_size=1))
    got, last, states = [], None, []

    def read(headers, stop_after=None):
        nonlocal last
        with svc.http.stream("GET", f"/jobs/{job['id']}/events", headers=headers, timeout=WAIT_S) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            event = {}
            for line in r.iter_lines():
                if line:
                    field, _, value = line.partition(": ")
                    event[field] = value
                    continue
                if event.get("event") == "log":
                    got.append(event["data"])
                    last = event["id"]
                elif event.get("event") == "state":
                    states.append(json.loads(event["data"])["state"])
                event = {}
                if stop_after is not None and len(got) >= stop_after:
                    return  # the client goes away mid-stream

    read({}, stop_after=3)
    assert len(got) == 3
    third = last
    read({"Last-Event-ID": third})
    assert states[-1] == "succeeded"
    assert got == svc.log(job["id"]).splitlines()
    again = svc.http.get(f"/jobs/{job['id']}/events", params={"offset": third}).text
    assert again.count("event: log") == len(got) - 3


def test_concurrent_submissions_are_each_answered_once(svc):
    """50 submissions from 10 threads: each is accepted (201) or refused cleanly (429, queue full at 20); every
    accepted job is listed once with its own folder, no refused one left anything, and the database is sound."""
    path = svc.upload("two.jsonl", prompts(2))
    before = {j["id"] for j in svc.http.get("/jobs").json()["jobs"]}

    def submit(i: int) -> tuple[int, dict]:
        with httpx.Client(base_url=str(svc.http.base_url), timeout=WAIT_S, trust_env=False) as http:
            r = http.post("/jobs", json={"recipe": fake_recipe(path, name=f"burst-{i}")})
            return r.status_code, r.json()

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(submit, range(50)))
    assert {code for code, _ in answers} <= {201, 429}
    accepted = {body["id"]: body["name"] for code, body in answers if code == 201}
    refused = [body for code, body in answers if code == 429]
    assert len(accepted) + len(refused) == 50 and len(accepted) == len({*accepted.values()})
    assert refused and all(body["error"].startswith("queue full") for body in refused)
    listed = [j for j in svc.http.get("/jobs").json()["jobs"] if j["id"] not in before]
    left = sum(j["attempt"] > 0 for j in listed)  # started meanwhile: no longer waiting
    assert 20 <= len(accepted) <= 20 + left  # never more than 20 waiting
    assert sorted(j["id"] for j in listed) == sorted(accepted)
    assert {j["name"] for j in listed} == set(accepted.values())
    folders = {p.name for p in (svc.root / "jobs").iterdir()} - before
    assert folders == set(accepted)
    with sqlite3.connect(svc.root / "service.db", timeout=30) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == len(before) + len(accepted)
    for job_id in accepted:
        r = svc.http.post(f"/jobs/{job_id}/cancel")
        assert r.status_code in (200, 409), r.text
    assert all(svc.job(j)["state"] in ENDED for j in accepted)


# --- what a request may not do ---------------------------------------------------------------------------------

def test_a_recipe_reads_only_uploads_bundled_data_and_data_dirs(svc, tmp_path):
    data = svc.base / "data"
    (data / "mine.jsonl").write_bytes(prompts(2))
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(prompts(2))
    (data / "link.jsonl").symlink_to(outside)
    upload = svc.upload("up.jsonl", prompts(2))

    def answer(prompts_path: str, extra: str = "") -> tuple[int, str]:
        r = svc.http.post("/jobs", json={"recipe": fake_recipe(prompts_path) + extra})
        body = r.json()
        if r.status_code == 201:
            svc.http.post(f"/jobs/{body['id']}/cancel")
        return r.status_code, body.get("error", "")

    for ok in (upload, str(data / "mine.jsonl"), str(BUNDLED_PROMPTS)):
        assert answer(ok)[0] == 201, ok
    assert answer(upload, "model: HuggingFaceTB/SmolLM2-135M-Instruct\n")[0] == 201  # a Hub id is a name
    for bad in ("/etc/passwd", str(outside), str(data / "link.jsonl"), f"{data}/../{tmp_path.name}/outside.jsonl",
                "~/.bashrc"):
        code, line = answer(bad)
        assert code == 422 and "outside the folders" in line and "\n" not in line, (bad, line)
    code, line = answer("outside.jsonl")
    assert code == 422 and "is not an absolute path" in line
    code, line = answer(upload, "model: ../models/x\n")
    assert code == 422 and "neither a model name nor an absolute path" in line
    for extra, words in ((f"judge: {{engine: fake, templates: {tmp_path}}}\n", "outside the folders"),
                         ("generate: {out: /tmp/elsewhere}\n", "run folder"),
                         ("engine: {engine: 'os:system'}\n", "names Python code")):
        code, line = answer(upload, extra)
        assert code == 422 and words in line, (extra, line)
    r = svc.http.post("/jobs", json={"recipe": fake_recipe(upload), "overrides": [f"prompts={outside}"]})
    assert r.status_code == 422 and "outside the folders" in r.json()["error"]
    secret = "hf_" + "aB3" * 12
    r = svc.http.post("/jobs", json={"recipe": fake_recipe(upload) + f"# token {secret}\n"})
    assert r.status_code == 422 and "secret" in r.json()["error"] and secret not in r.text


def test_refusals_are_one_json_line(svc, tmp_path):
    """A bad recipe is refused with the line `rlaif run --dry-run` prints; every other refusal is JSON with one
    line too (no traceback)."""
    upload = svc.upload("x.jsonl", prompts(2))
    bad = fake_recipe(upload).replace("stages: [generate, judge]", "stages: [generate, judje]")
    (tmp_path / "recipe.yaml").write_text(bad)
    cli = subprocess.run([sys.executable, "-m", "rlaif", "run", "recipe.yaml", "--dry-run"], cwd=tmp_path,
                         capture_output=True, text=True, env=BASE_ENV)
    assert cli.returncode == 2
    r = svc.http.post("/jobs", json={"recipe": bad})
    assert r.status_code == 422 and "error: " + r.json()["error"] == cli.stderr.strip()
    queued = svc.submit(fake_recipe(upload, name="blocked"))  # behind nothing, but a retry of it is refused
    answers = {
        "too large": svc.http.post("/jobs", json={"recipe": "x" * (2 << 20)}),
        "not json": svc.http.post("/jobs", content=b"{not json", headers={"Content-Type": "application/json"}),
        "no recipe": svc.http.post("/jobs", json={"overrides": []}),
        "unknown job": svc.http.get("/jobs/0123456789ab"),
        "bad id": svc.http.get("/jobs/..%2f..%2fetc"),
        "bad state": svc.http.get("/jobs", params={"state": "sleeping"}),
        "bad offset": svc.http.get(f"/jobs/{queued['id']}/log", params={"offset": -1}),
        "bad upload name": svc.http.post("/uploads", params={"name": "../x"}, content=b"x"),
        "no endpoint": svc.http.get("/nothing"),
        "retry while waiting": svc.http.post(f"/jobs/{queued['id']}/retry"),
    }
    svc.http.post(f"/jobs/{queued['id']}/cancel")
    expected = {"too large": 413, "not json": 422, "no recipe": 422, "unknown job": 404, "bad id": 404,
                "bad state": 422, "bad offset": 422, "bad upload name": 422, "no endpoint": 404,
                "retry while waiting": 409}
    assert {k: r.status_code for k, r in answers.items()} == expected
    for name, r in answers.items():
        line = r.json()["error"]
        assert line and "\n" not in line and "Traceback" not in line, (name, line)


def test_a_token_guards_every_request_and_stays_secret(services):
    """With a token, a request without it or with a wrong one is refused (401); the token and HF_TOKEN appear in
    no response, no log line, not the database and no job folder; the job's processes do not get the service's
    token and do get OMP_WAIT_POLICY=PASSIVE."""
    served = services[1]
    token, hub = TOKEN, HUB
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
            r = httpx.get(f"http://127.0.0.1:{served.port}/api/v1/health", headers=headers, trust_env=False)
            assert r.status_code == 401 and token not in r.text, headers
        texts = [served.http.get("/health").text]
        job = served.submit(fake_recipe(served.upload("p.jsonl", prompts(4)), batch_size=1))
        job_dir = served.root / "jobs" / job["id"]
        served.wait(job["id"], lambda j: j["state"] == "running" and len(job_processes(job_dir)) >= 2)
        for pid in job_processes(job_dir):
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert not any(v.startswith(b"RLAIF_SERVICE_TOKEN=") for v in environ)
            assert b"OMP_WAIT_POLICY=PASSIVE" in environ
        served.end(job["id"])
        texts += [served.http.get(p).text for p in ("/jobs", f"/jobs/{job['id']}", f"/jobs/{job['id']}/log",
                                                      f"/jobs/{job['id']}/files", f"/jobs/{job['id']}/events")]
    finally:
        served.stop()  # its last log lines written before the files are read
    assert all(token not in t and hub not in t for t in texts)
    files = [p for p in served.base.rglob("*") if p.is_file()]
    assert any(p.name == "service.db" for p in files) and any(p.name == "log" for p in files)
    for p in files:
        data = p.read_bytes()
        assert token.encode() not in data and hub.encode() not in data, p


def test_an_address_other_than_loopback_needs_a_token(tmp_path):
    def serve(*args, env=None):
        return subprocess.run([sys.executable, "-m", "rlaif", "serve", "--root", str(tmp_path / "r"), *args],
                              cwd=str(ROOT), capture_output=True, text=True, timeout=120,
                              env={**{k: v for k, v in BASE_ENV.items() if k != "RLAIF_SERVICE_TOKEN"}, **(env or {})})

    short = tmp_path / "short"
    short.write_text("abc\n")
    with ThreadPoolExecutor(2) as pool:  # two refusals, each a whole CLI start: at once
        no_token, too_short = pool.map(lambda args: serve(*args), [
            ("--host", "0.0.0.0", "--port", str(free_port())), ("--host", "0.0.0.0", "--token-file", str(short))])
    res = no_token
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and "needs a token" in res.stderr
    res = too_short
    assert res.returncode == 2 and "at least 16" in res.stderr and "abc" not in res.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.integration
def test_cancel_during_a_vllm_stage_leaves_no_process_and_retry_finishes(svc):
    """The embedded model on real vLLM: a job cancelled while its generate stage runs the engine is cancelled
    within 10 s with no process left, vLLM's EngineCore included; a retry finishes the stage."""
    served = svc  # the module's service (its fake delay does not reach vLLM)
    recipe = ("name: vllm\nstages: [generate]\nengine: {engine: vllm, batch_size: 4}\n"
              "generate: {n: 2, max_tokens: 16, limit: 4, seed: 0}\n")
    job = served.submit(recipe)
    try:
        job_dir = served.root / "jobs" / job["id"]
        served.wait(job["id"], lambda j: any("EngineCore" in c for c in cmdlines(job_processes(job_dir))))
        r = served.http.post(f"/jobs/{job['id']}/cancel", timeout=10)
        assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
        assert job_processes(job_dir) == set(), cmdlines(job_processes(job_dir))
        assert served.http.post(f"/jobs/{job['id']}/retry").status_code == 200
        done = served.end(job["id"])
        assert done["state"] == "succeeded", served.log(job["id"])
        assert done["stages"]["generate"]["counts"]["train"] == 4
        assert job_processes(job_dir) == set()
    finally:
        if served.job(job["id"])["state"] not in ENDED:
            served.http.post(f"/jobs/{job['id']}/cancel")
