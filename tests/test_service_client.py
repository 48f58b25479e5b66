"""``rlaif jobs`` and service/client.py: the event-stream reader and its reconnects on a fake stream that drops
mid-event, then the CLI end to end against a real ``rlaif serve`` on 127.0.0.1 running fake-engine recipes."""

from __future__ import annotations

import json

import httpx
import pytest

from service.client import Client, ServiceError, parse_sse, stream_lines

# --- the event-stream reader ------------------------------------------------------------------------------------


def test_stream_lines_split_only_at_the_standards_line_ends():
    """CR, LF and CRLF end a line, also a CRLF cut between two chunks; a form feed or U+2028 inside a log line
    does not (httpx's iter_lines would split there and lose the rest of the line); an unfinished last line is
    not yielded."""
    chunks = ["a\r", "\nb\rc", "\n\nd\u2028e\x0cf\n", "cut"]
    assert list(stream_lines(chunks)) == ["a", "b", "c", "", "d\u2028e\x0cf"]


def test_parse_sse_dispatches_only_whole_events():
    text = (": keep-alive\n\nevent: log\nid: 6\ndata: hello\n\nevent: state\ndata: {\"state\": \"running\"}\n\n"
            "data:  two spaces\ndata:second\n\nevent: log\nid: 12\ndata: cut off")
    events = list(parse_sse(stream_lines([text])))
    assert [(e.event, e.data, e.id) for e in events] == [
        ("log", "hello", "6"), ("state", '{"state": "running"}', "6"), ("message", " two spaces\nsecond", "6")]


# --- reconnects on a fake service whose stream drops ------------------------------------------------------------

LINES = [f"line {i} {'x' * i}" for i in range(10)]


class DroppingStream(httpx.SyncByteStream):
    """The events of ``lines`` after byte ``after``; drops the connection in the middle of the event after
    ``drop_after`` whole events (None: ends cleanly after the job's final state)."""

    def __init__(self, service: FakeService, after: int, drop_after: int | None, repeat_first: bool):
        self.service, self.after, self.drop_after, self.repeat_first = service, after, drop_after, repeat_first

    def __iter__(self):
        events, offset = [], 0
        for line in self.service.lines:
            offset += len(line.encode()) + 1
            if offset > self.after or (self.repeat_first and offset == self.after):
                events.append(f"event: log\nid: {offset}\ndata: {line}\n\n")
        if self.drop_after is None:
            events.append(f"event: state\ndata: {json.dumps(self.service.ended())}\n\n")
        for i, event in enumerate(events):
            if i == self.drop_after:
                yield event[: len(event) // 2].encode()  # half an event, then the connection is gone
                raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")
            yield event.encode()


class FakeService:
    """/jobs/j1, /jobs/j1/events and /jobs/j1/log of a job whose ``lines`` are its log; ``plan`` says how each
    successive stream behaves: a number of whole events before it drops, or None for a clean, final stream.
    ``repeat`` makes every re-opened stream send the last line shown once more (a server off by one)."""

    def __init__(self, plan: list[int | None], repeat: bool = False, lines=LINES):
        self.plan, self.repeat, self.lines = list(plan), repeat, lines
        self.streams: list[int] = []  # the Last-Event-ID of each stream opened
        self.finished = False

    def ended(self) -> dict:
        self.finished = True
        return {"id": "j1", "state": "succeeded", "error": None}

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/v1")
        if path == "/jobs/j1":
            return httpx.Response(200, json=self.ended() if self.finished else {"id": "j1", "state": "running"})
        if path == "/jobs/j1/events":
            after = int(request.headers.get("Last-Event-ID", "0"))
            self.streams.append(after)
            drop = self.plan.pop(0) if self.plan else None
            return httpx.Response(200, headers={"content-type": "text/event-stream"},
                                  stream=DroppingStream(self, after, drop, self.repeat and after > 0))
        if path == "/jobs/j1/log":
            data = "".join(line + "\n" for line in self.lines).encode()
            offset = int(request.url.params["offset"])
            return httpx.Response(200, content=data[offset:], headers={"X-Log-Offset": str(len(data))})
        return httpx.Response(404, json={"error": f"no job {path.split('/')[2]!r}"})


def _follow(service: FakeService) -> tuple[list[str], dict, list[float]]:
    shown, waits = [], []
    client = Client("http://127.0.0.1:9", token="t0ken", transport=httpx.MockTransport(service.handler))
    job = client.follow("j1", on_line=shown.append, sleep=waits.append)
    return shown, job, waits


@pytest.mark.parametrize("plan", [[3, 2, None], [0, 0, 7, None], [None]], ids=["drops-twice", "drops-at-once",
                                                                                 "clean"])
def test_follow_shows_every_line_once_across_dropped_streams(plan):
    service = FakeService(plan)
    shown, job, _ = _follow(service)
    assert shown == LINES and job["state"] == "succeeded"
    offsets = [sum(len(x) + 1 for x in LINES[:n]) for n in range(len(LINES) + 1)]
    assert all(after in offsets for after in service.streams)  # each re-open resumes after a whole line
    assert len(service.streams) == len(plan)


def test_follow_skips_a_line_the_server_sends_again():
    service = FakeService([4, None], repeat=True)
    shown, _, _ = _follow(service)
    assert shown == LINES and service.streams[1] == sum(len(x) + 1 for x in LINES[:4])


def test_follow_reads_the_logs_rest_when_the_stream_ends_with_the_job():
    """A stream that drops after the job ended: the lines it did not carry come from /log?offset=."""
    service = FakeService([5])
    service.finished = True  # the job already ended: no re-open, the rest is read from the log
    shown, job, _ = _follow(service)
    assert shown == LINES and job["state"] == "succeeded" and len(service.streams) == 1


def test_follow_gives_up_after_the_service_is_gone_for_good():
    service = FakeService([2])
    calls = {"n": 0}

    def handler(request):
        calls["n"] += 1
        if calls["n"] > 2:  # the first /jobs/j1 and the stream worked; then the server is gone
            raise httpx.ConnectError("[Errno 111] Connection refused")
        return service.handler(request)

    client = Client("http://127.0.0.1:9", transport=httpx.MockTransport(handler))
    shown, waits = [], []
    with pytest.raises(ServiceError, match=r"lost the service after byte \d+ .*rlaif jobs logs j1 --follow"):
        client.follow("j1", on_line=shown.append, sleep=waits.append, reconnects=3)
    assert shown == LINES[:2] and waits == [0.2, 0.4, 0.8]


def test_follow_of_an_unknown_job_is_the_services_line():
    client = Client("http://127.0.0.1:9", transport=httpx.MockTransport(FakeService([]).handler))
    with pytest.raises(ServiceError, match="no job 'nope'") as e:
        client.follow("nope", on_line=print)
    assert e.value.status == 404 and e.value.exit_code == 2


def test_a_reply_that_is_not_the_services_is_named():
    client = Client("http://127.0.0.1:9", transport=httpx.MockTransport(
        lambda r: httpx.Response(502, text="<html>Bad Gateway</html>")))
    with pytest.raises(ServiceError, match="answered 502 Bad Gateway without the service's error line") as e:
        client.jobs()
    assert e.value.exit_code == 1


def test_the_token_is_sent_as_a_bearer_header_only():
    seen = []
    client = Client("http://127.0.0.1:9", token="s3cret-token", transport=httpx.MockTransport(
        lambda r: seen.append(r) or httpx.Response(200, json={"jobs": []})))
    client.jobs("running")
    assert seen[0].headers["Authorization"] == "Bearer s3cret-token"
    assert "s3cret" not in str(seen[0].url) and seen[0].url.params["state"] == "running"


def test_the_cli_and_the_client_agree_on_the_defaults():
    from rlaif import jobs
    from service import client

    assert (jobs.DEFAULT_SERVER, jobs.SERVER_ENV) == (client.DEFAULT_SERVER, client.SERVER_ENV)


# --- the CLI against a real service --------------------------------------------------------------------------------

TOKEN = "client-test-token-" + "5e" * 10


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """An open service whose fake engine sleeps 1 s per call (a job runs for about 15 s), and one that requires a
    token; both on 127.0.0.1, stopped (their jobs cancelled) at the end."""
    from bench.service import PROMPTS, LocalServer, job_processes

    folder = tmp_path_factory.mktemp("client")
    (folder / "token").write_text(TOKEN + "\n")
    open_, guarded = (LocalServer(folder / "open", env={"RLAIF_FAKE_DELAY_S": "1"}),
                      LocalServer(folder / "guarded", token_file=folder / "token"))
    try:
        for server in (open_, guarded):
            server.start(wait=False)
        open_.wait_healthy()
        guarded.wait_healthy(token=TOKEN)
        (open_.data / "p.jsonl").write_text(PROMPTS)
        yield open_, guarded
    finally:
        if open_.proc is not None and open_.proc.poll() is None:
            with Client(open_.url) as client:
                for job in client.jobs():
                    if job["state"] in ("queued", "running"):
                        client.cancel(job["id"])
        for server in (open_, guarded):
            server.stop()
        for proc in job_processes(open_.root / "jobs"):  # none unless a cancel failed: our jobs, by pid
            proc.kill()


def _env(**extra: str) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("RLAIF_SERVER", "RLAIF_SERVICE_TOKEN")}
    return {**env, "OMP_WAIT_POLICY": "PASSIVE", "NO_COLOR": "1", "COLUMNS": "200", **extra}


def _jobs(*argv: str, server: str | None = None, timeout: float = 300, **env: str):
    import subprocess
    import sys

    from bench.service import ROOT

    where = ("--server", server) if server else ()
    return subprocess.run([sys.executable, "-m", "rlaif", "jobs", *argv, *where], cwd=ROOT, env=_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def _recipe(server, tmp_path, name: str = "client") -> str:
    from bench.service import fake_recipe

    path = tmp_path / f"{name}.yaml"
    path.write_text(fake_recipe(name, server.data / "p.jsonl"))
    return str(path)


def _log_lines(server, job_id: str) -> list[str]:
    return (server.root / "jobs" / job_id / "log").read_text().splitlines()


def _one_error_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.stderr, res.stderr
    return lines[0]


def test_submit_follow_prints_the_log_and_exits_0(served, tmp_path):
    server, _ = served
    res = _jobs("submit", _recipe(server, tmp_path), "--follow", server=server.url)
    assert res.returncode == 0, res.stderr
    job_id = res.stderr.split()[1]  # "job <id> queued: client" on stderr: stdout is the log alone
    assert res.stdout.splitlines() == _log_lines(server, job_id)
    assert any(line.startswith("[judge]") for line in res.stdout.splitlines())
    assert f"job {job_id} succeeded" in res.stderr


def test_logs_follow_picks_the_stream_up_after_the_service_restarts(served, tmp_path):
    """The API process is SIGKILLed while the CLI follows a running job (30 prompts: a minute of fake engine calls)
    and started again on the same port; the job is then cancelled. The CLI reconnects after the last line it
    showed, prints every line of the log exactly once, and exits 1 with the job's end."""
    import subprocess
    import sys

    from bench.service import ROOT, fake_recipe, wait_for

    server, _ = served
    prompts = server.data / "p30.jsonl"
    prompts.write_text("".join(f'{{"prompt": "Question {i}?"}}\n' for i in range(30)))
    with Client(server.url) as client:
        job_id = client.submit(fake_recipe("restarted", prompts))["id"]
        wait_for(lambda: client.job(job_id)["state"] == "running", 120, "the job running")
    follower = subprocess.Popen([sys.executable, "-m", "rlaif", "jobs", "logs", job_id, "--follow", "--server",
                                 server.url], cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    try:
        first = follower.stdout.readline()  # the stream is open and delivering
        server.kill()
        with Client(server.url) as client_down, pytest.raises(ServiceError, match="no answer from the service"):
            client_down.health()
        server.start()
        with Client(server.url) as client:
            assert client.job(job_id)["state"] == "running"  # adopted: the restart came while the job ran
            client.cancel(job_id)
        rest, err = follower.communicate(timeout=300)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 1 and err.strip().splitlines()[-1].startswith(f"error: job {job_id} cancelled"), err
    assert first and (first + rest).splitlines() == _log_lines(server, job_id)


def test_cancel_then_retry(served, tmp_path):
    server, _ = served
    from bench.service import wait_for

    with Client(server.url) as client:
        job_id = client.submit(open(_recipe(server, tmp_path)).read())["id"]
        wait_for(lambda: client.job(job_id)["state"] == "running", 120, "the job running")
    res = _jobs("cancel", job_id, server=server.url)
    assert res.returncode == 0 and res.stdout.strip() == f"job {job_id} cancelled", res.stderr
    again = _jobs("cancel", job_id, server=server.url)
    assert again.returncode == 2 and "already ended" in _one_error_line(again)
    follow = _jobs("logs", job_id, "--follow", server=server.url)
    assert follow.returncode == 1 and _one_error_line(follow).startswith(f"error: job {job_id} cancelled")
    assert follow.stdout.splitlines() == _log_lines(server, job_id)
    retried = _jobs("retry", job_id, server=server.url)
    assert retried.returncode == 0 and retried.stdout.startswith(f"job {job_id} "), retried.stderr
    with Client(server.url) as client:
        assert client.job(job_id)["state"] in ("queued", "running")
        twice = _jobs("retry", job_id, server=server.url)
        assert twice.returncode == 2 and "retry a job that ended" in _one_error_line(twice)
        client.cancel(job_id)


def test_list_and_show(served, tmp_path):
    server, _ = served
    with Client(server.url) as client:
        job_id = client.submit(open(_recipe(server, tmp_path, "shown")).read())["id"]
        client.cancel(job_id)
    listed = _jobs("list", server=server.url)
    assert listed.returncode == 0 and any(line.split()[:2] == [job_id, "cancelled"]
                                          for line in listed.stdout.splitlines()), listed.stdout
    only = _jobs("list", "--state", "running", "--json", server=server.url)
    assert only.returncode == 0 and all(j["state"] == "running" for j in json.loads(only.stdout)["jobs"])
    assert job_id not in only.stdout
    shown = _jobs("show", job_id, server=server.url)
    assert shown.returncode == 0 and f"id:        {job_id}" in shown.stdout and "state:     cancelled" in shown.stdout
    as_json = json.loads(_jobs("show", job_id, "--json", server=server.url).stdout)
    assert as_json["id"] == job_id and as_json["name"] == "shown" and as_json["state"] == "cancelled"


def _closed_port() -> int:
    from bench.service import free_port

    return free_port()  # nothing listens there once it returns


HOSTILE = {
    "unknown-id": {"show": ["show", "0123456789ab"], "logs": ["logs", "0123456789ab", "--follow"],
                   "cancel": ["cancel", "0123456789ab"], "retry": ["retry", "0123456789ab"],
                   "list": ["list", "--state", "exploded"], "submit": ["submit", "{outside}"]},
    "no-server": {"show": ["show", "0123456789ab"], "logs": ["logs", "0123456789ab", "--follow"],
                  "cancel": ["cancel", "0123456789ab"], "retry": ["retry", "0123456789ab"], "list": ["list"],
                  "submit": ["submit", "{recipe}", "--follow"]},
    "bad-server-url": {"show": ["show", "0123456789ab"], "logs": ["logs", "0123456789ab"],
                       "cancel": ["cancel", "0123456789ab"], "retry": ["retry", "0123456789ab"],
                       "list": ["list"], "submit": ["submit", "{recipe}"]},
}
EXPECTED = {"unknown-id": r"no job '0123456789ab'|--state 'exploded'|outside the folders a recipe sent to the "
                          r"service may read .*upload the file",
            "no-server": r"no answer from the service at http://127\.0\.0\.1:\d+ .*rlaif serve",
            "bad-server-url": r"--server 'ftp://127\.0\.0\.1:8000': give an http:// or https:// URL"}


@pytest.fixture(scope="module")
def hostile_answers(request, served, tmp_path_factory):
    """The ``rlaif jobs`` runs of the hostile-input tests this session selected, three at a time (each is a whole
    CLI start, mostly spent importing) when the first of them asks; each test checks its own answer."""
    from concurrent.futures import ThreadPoolExecutor

    from bench.service import fake_recipe

    server, _ = served
    folder = tmp_path_factory.mktemp("hostile")
    (folder / "outside.jsonl").write_text('{"prompt": "hi"}\n')
    (folder / "outside.yaml").write_text(fake_recipe("outside", folder / "outside.jsonl"))
    recipe = _recipe(server, folder)
    wanted = [(item.callspec.params["hostile"], item.callspec.params["command"]) for item in request.session.items
              if getattr(item, "originalname", None) == "test_hostile_inputs_are_one_line_and_exit_2"]

    def answer(case: tuple[str, str]):
        hostile, command = case
        argv = [a.format(outside=folder / "outside.yaml", recipe=recipe) for a in HOSTILE[hostile][command]]
        url = {"unknown-id": server.url, "no-server": f"http://127.0.0.1:{_closed_port()}",
               "bad-server-url": "ftp://127.0.0.1:8000"}[hostile]
        return _jobs(*argv, server=url, timeout=120)

    with ThreadPoolExecutor(3) as pool:
        return dict(zip(wanted, pool.map(answer, wanted), strict=True))


@pytest.mark.parametrize("command", ["submit", "list", "show", "logs", "cancel", "retry"])
@pytest.mark.parametrize("hostile", list(HOSTILE))
def test_hostile_inputs_are_one_line_and_exit_2(hostile_answers, hostile, command):
    import re

    res = hostile_answers[hostile, command]
    assert res.returncode == 2 and re.search(EXPECTED[hostile], _one_error_line(res)), res.stderr
    assert res.stdout == ""


def test_a_refused_token_is_one_line_without_the_token(served):
    _, guarded = served
    wrong = TOKEN[:-2] + "xx"
    res = _jobs("list", server=guarded.url, RLAIF_SERVICE_TOKEN=wrong)
    line = _one_error_line(res)
    assert res.returncode == 2 and "Authorization: Bearer" in line and wrong not in res.stderr + res.stdout
    ok = _jobs("list", "--json", server=guarded.url, RLAIF_SERVICE_TOKEN=TOKEN)
    assert ok.returncode == 0 and json.loads(ok.stdout) == {"jobs": []}
