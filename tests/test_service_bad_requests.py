"""Bad requests against a real ``rlaif serve`` on 127.0.0.1: each one is a 4xx whose body is ONE JSON line
``{"error": "..."}`` (no traceback, no token), it creates no job, and nothing on disk changes outside the
service's own root (a snapshot of the folder around it, taken before and after each request).

Two servers for the module: an open one (its jobs run the fake engine slowed by RLAIF_FAKE_DELAY_S, so one
job stays running, one waits behind it, one was cancelled) and one that requires a bearer token. Requests are
sent as raw HTTP (http.client) so that a path like ``../../etc/passwd`` or ``%2e%2e`` reaches the server as
written, never normalised by a client library.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.service import PROMPTS, LocalServer, fake_recipe, job_processes, wait_for
from service.client import Client

pytestmark = pytest.mark.timeout(900)
TOKEN = "s2-corpus-token-" + "7f3a9c" * 4
WRONG = TOKEN[:-1] + "x"
HF_LIKE = "hf_" + "Ab3" * 12  # a Hub token's shape: refused in a recipe, never echoed


@dataclass
class World:
    folder: Path
    outside: Path
    open: LocalServer
    guarded: LocalServer
    running: str = ""
    queued: str = ""
    ended: str = ""
    uploads: dict[str, str] = field(default_factory=dict)

    def names(self) -> dict[str, str]:
        return {"outside": str(self.outside), "data": str(self.open.data), "root": str(self.open.root),
                "running": self.running, "queued": self.queued, "ended": self.ended, **self.uploads}


def _upload(client: Client, name: str, content: bytes) -> str:
    return client.upload(name, content)["path"]


HOSTILE_CONSTITUTIONS = {
    "mro": b"name: h\nversion: 1\nprinciples:\n  - id: evil\n    critique: \"{{ ''.__class__.__mro__ }}\"\n"
           b"    revision: r\n    compare: c\n",
    "subclasses": b"name: h\nversion: 1\nprinciples:\n  - id: evil\n    critique: \"{{ ().__class__.__base__"
                  b".__subclasses__() }}\"\n    revision: r\n    compare: c\n",
    "bomb": b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
            b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
            b"e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
            b"g: [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nname: h\nversion: 1\nprinciples: []\n",
    "huge": b"name: h\nversion: 1\nprinciples:\n  - id: big\n    critique: \"" + b"x" * 3_000_000 + b"\"\n"
            b"    revision: r\n    compare: c\n",
    "deep": b"name: h\nversion: 1\nprinciples: " + b"[" * 100_000 + b"]" * 100_000 + b"\n",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad-requests")
    outside = folder / "outside"
    outside.mkdir()
    (outside / "p.jsonl").write_text(PROMPTS)
    (outside / "secret.txt").write_text("not for the service\n")
    (folder / "token").write_text(TOKEN + "\n")
    w = World(folder, outside, LocalServer(folder / "open", env={"RLAIF_FAKE_DELAY_S": "300"}),
              LocalServer(folder / "guarded", token_file=folder / "token"))
    try:
        for server in (w.open, w.guarded):
            server.start(wait=False)
        w.open.wait_healthy()
        w.guarded.wait_healthy(token=TOKEN)
        _set_up(w)
        yield w
    finally:
        _tear_down(w)


def _set_up(w: World) -> None:
    data = w.open.data
    (data / "p.jsonl").write_text(PROMPTS)
    (data / "link.jsonl").symlink_to(w.outside / "p.jsonl")  # a file link out of the data folder
    (data / "escape").symlink_to(w.outside, target_is_directory=True)
    os.mkfifo(data / "fifo.jsonl")  # reading it would hang: refused as no file
    client = Client(w.open.url)
    for name, content in HOSTILE_CONSTITUTIONS.items():
        w.uploads[f"const_{name}"] = _upload(client, f"{name}.yaml", content)
    prompts = Path(_upload(client, "prompts.jsonl", PROMPTS.encode()))
    link = prompts.parent / "passwd.jsonl"  # a link out of an upload's folder (uploads cannot make one: a
    link.symlink_to("/etc/passwd")          # folder of the root changed behind the service's back)
    w.uploads["upload_link"] = str(link)
    recipe = fake_recipe("corpus", data / "p.jsonl")
    w.running = client.submit(recipe)["id"]
    wait_for(lambda: client.job(w.running)["state"] == "running", 120, "the first job running")
    w.queued = client.submit(recipe)["id"]  # waits behind it (one job runs at a time)
    w.ended = client.submit(recipe)["id"]
    client.cancel(w.ended)
    run = w.open.root / "jobs" / w.running / "run"  # the link goes in once the pipeline took the folder as its root
    wait_for(lambda: (run / "generate").is_dir(), 120, "the running job in its generate stage")
    (run / "leak.txt").symlink_to(w.outside / "secret.txt")  # a link out of a job's run folder
    client.close()


def _tear_down(w: World) -> None:
    if w.open.proc is not None and w.open.proc.poll() is None:
        with Client(w.open.url) as client:
            for job in client.jobs():
                if job["state"] in ("queued", "running"):
                    client.cancel(job["id"])
    for server in (w.open, w.guarded):
        server.stop()
    for proc in job_processes(w.open.root / "jobs"):  # none, unless a cancel failed: our jobs, by pid
        proc.kill()


# --- the requests ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Bad:
    id: str
    method: str
    path: str  # /api/v1/..., with {running}, {queued}, {ended}, {data}, {outside}, {root}, {const_*} filled in
    body: bytes | str | dict | None = None  # a dict is sent as JSON; a str is formatted, then sent as it is
    statuses: tuple[int, ...] = (422,)
    headers: dict = field(default_factory=dict)
    guarded: bool = False  # sent to the server that requires a token
    auth: bool = False  # send the right token
    chunked: bool = False  # send the body in chunks, without a Content-Length
    headers_only: bool = False  # send the headers (a Content-Length) and no body


def recipe(prompts: str = "{data}/p.jsonl", engine: str = "fake", **extra: str) -> dict:
    """A fake-engine recipe (bench/service.py's) with ``prompts`` and top-level ``extra`` keys."""
    lines = fake_recipe("bad", Path(prompts)).replace("engine: fake,", f"engine: {engine!r},").splitlines()
    return {"recipe": "\n".join([*lines, *(f"{k}: {v}" for k, v in extra.items())]) + "\n"}


DEEP_JSON = "[" * 200_000 + "]" * 200_000
DEEP_YAML = "name: deep\nstages: [generate]\nroot: r\nengine: " + "[" * 100_000 + "]" * 100_000 + "\n"
BOMB_YAML = HOSTILE_CONSTITUTIONS["bomb"].decode().replace("principles: []", "stages: [generate]\nroot: r")
UNKNOWN = "0123456789ab"

CASES = [
    # malformed JSON and wrong types
    Bad("not-json", "POST", "/jobs", "this is not json", (400, 422)),
    Bad("truncated-json", "POST", "/jobs", '{"recipe": "name: x', (400, 422)),
    Bad("json-array", "POST", "/jobs", "[]", (400, 422)),
    Bad("json-null", "POST", "/jobs", "null", (400, 422)),
    Bad("not-utf8", "POST", "/jobs", b'{"recipe": "\xff\xfe"}', (400, 422)),
    Bad("json-nested-200000-deep", "POST", "/jobs", DEEP_JSON, (400, 413, 422)),
    Bad("recipe-missing", "POST", "/jobs", {}),
    Bad("recipe-a-number", "POST", "/jobs", {"recipe": 5}),
    Bad("recipe-a-list", "POST", "/jobs", {"recipe": ["name: x"]}),
    Bad("overrides-a-string", "POST", "/jobs", {**recipe(), "overrides": "generate.n=2"}),
    Bad("overrides-of-numbers", "POST", "/jobs", {**recipe(), "overrides": [1, 2]}),
    Bad("unknown-field", "POST", "/jobs", {**recipe(), "root": "/tmp"}),
    Bad("override-without-equals", "POST", "/jobs", {**recipe(), "overrides": ["generate.n"]}),
    Bad("recipe-not-a-mapping", "POST", "/jobs", {"recipe": "- a\n- b\n"}),
    Bad("recipe-yaml-error", "POST", "/jobs", {"recipe": "name: [unclosed\n"}),
    Bad("recipe-alias-bomb", "POST", "/jobs", {"recipe": BOMB_YAML}),
    Bad("recipe-nested-100000-deep", "POST", "/jobs", {"recipe": DEEP_YAML}),
    Bad("recipe-unknown-stage", "POST", "/jobs", {"recipe": "name: x\nroot: r\nstages: [fly]\n"}),
    Bad("recipe-with-a-hub-token", "POST", "/jobs", recipe(publish=f"{{token: {HF_LIKE}}}")),
    # huge bodies
    Bad("body-over-the-limit", "POST", "/jobs", {"recipe": "#" * (2 << 20)}, (413,)),
    Bad("chunked-body-over-the-limit", "POST", "/jobs", "#" * (2 << 20), (413,), chunked=True),
    Bad("upload-over-the-limit", "POST", "/uploads?name=big.jsonl", None, (413,), {"Content-Length": str(1 << 40)},
        headers_only=True),
    # paths a recipe names
    Bad("prompts-etc-passwd", "POST", "/jobs", recipe("/etc/passwd")),
    Bad("prompts-relative-dotdot", "POST", "/jobs", recipe("../../etc/passwd")),
    Bad("prompts-dotdot-out-of-data-dir", "POST", "/jobs", recipe("{data}/../../outside/p.jsonl")),
    Bad("prompts-absolute-outside", "POST", "/jobs", recipe("{outside}/p.jsonl")),
    Bad("prompts-symlink-out-of-data-dir", "POST", "/jobs", recipe("{data}/link.jsonl")),
    Bad("prompts-through-a-linked-folder", "POST", "/jobs", recipe("{data}/escape/p.jsonl")),
    Bad("prompts-symlink-out-of-an-upload", "POST", "/jobs", recipe("{upload_link}")),
    Bad("prompts-home-ssh-key", "POST", "/jobs", recipe("~/.ssh/id_rsa")),
    Bad("prompts-the-service-db", "POST", "/jobs", recipe("{root}/service.db")),
    Bad("prompts-another-jobs-recipe", "POST", "/jobs", recipe("{root}/jobs/{running}/recipe.yaml")),
    Bad("prompts-a-fifo", "POST", "/jobs", recipe("{data}/fifo.jsonl")),
    Bad("override-prompts-etc-passwd", "POST", "/jobs", {**recipe(), "overrides": ["prompts=/etc/passwd"]}),
    Bad("constitution-etc-passwd", "POST", "/jobs", recipe(constitution="/etc/passwd")),
    Bad("judge-constitution-outside", "POST", "/jobs", recipe(constitution="{outside}/secret.txt")),
    Bad("stage-output-outside", "POST", "/jobs", recipe(generate="{out: /tmp/elsewhere}")),
    Bad("engine-names-python-code", "POST", "/jobs", recipe(engine="os:system")),
    # a hostile constitution, uploaded
    Bad("constitution-jinja-mro", "POST", "/jobs", recipe(constitution="{const_mro}")),
    Bad("constitution-jinja-subclasses", "POST", "/jobs", recipe(constitution="{const_subclasses}")),
    Bad("constitution-alias-bomb", "POST", "/jobs", recipe(constitution="{const_bomb}")),
    Bad("constitution-huge-text", "POST", "/jobs", recipe(constitution="{const_huge}")),
    Bad("constitution-nested-100000-deep", "POST", "/jobs", recipe(constitution="{const_deep}")),
    # job ids
    Bad("show-unknown", "GET", f"/jobs/{UNKNOWN}", statuses=(404,)),
    Bad("show-traversal-id", "GET", "/jobs/..%2f..%2fservice.db", statuses=(404,)),
    Bad("show-id-4000-chars", "GET", "/jobs/" + "a" * 4000, statuses=(404, 414)),
    Bad("cancel-unknown", "POST", f"/jobs/{UNKNOWN}/cancel", statuses=(404,)),
    Bad("retry-unknown", "POST", f"/jobs/{UNKNOWN}/retry", statuses=(404,)),
    Bad("log-unknown", "GET", f"/jobs/{UNKNOWN}/log", statuses=(404,)),
    Bad("events-unknown", "GET", f"/jobs/{UNKNOWN}/events", statuses=(404,)),
    Bad("files-unknown", "GET", f"/jobs/{UNKNOWN}/files", statuses=(404,)),
    Bad("list-unknown-state", "GET", "/jobs?state=exploded"),
    Bad("log-negative-offset", "GET", "/jobs/{running}/log?offset=-1"),
    Bad("log-offset-not-a-number", "GET", "/jobs/{running}/log?offset=abc"),
    Bad("log-offset-past-int64", "GET", "/jobs/{running}/log?offset=" + "9" * 30, statuses=(400, 416, 422)),
    Bad("events-last-event-id-not-a-number", "GET", "/jobs/{running}/events", headers={"Last-Event-ID": "x"}),
    Bad("events-last-event-id-past-int64", "GET", "/jobs/{running}/events", statuses=(400, 416, 422),
        headers={"Last-Event-ID": "9" * 30}),
    # state conflicts
    Bad("cancel-an-ended-job", "POST", "/jobs/{ended}/cancel", statuses=(409,)),
    Bad("retry-a-running-job", "POST", "/jobs/{running}/retry", statuses=(409,)),
    Bad("retry-a-queued-job", "POST", "/jobs/{queued}/retry", statuses=(409,)),
    # file reads
    Bad("file-dotdot-etc-passwd", "GET", "/jobs/{running}/files/../../../../../../etc/passwd", statuses=(400, 404)),
    Bad("file-encoded-dotdot", "GET", "/jobs/{running}/files/%2e%2e/%2e%2e/%2e%2e/service.db", statuses=(400, 404)),
    Bad("file-encoded-slashes", "GET", "/jobs/{running}/files/..%2f..%2frecipe.yaml", statuses=(400, 404)),
    Bad("file-absolute", "GET", "/jobs/{running}/files//etc/passwd", statuses=(400, 404)),
    Bad("file-encoded-absolute", "GET", "/jobs/{running}/files/%2fetc%2fpasswd", statuses=(400, 404)),
    Bad("file-symlink-out-of-the-run", "GET", "/jobs/{running}/files/leak.txt", statuses=(400, 404)),
    Bad("file-nul-byte", "GET", "/jobs/{running}/files/a%00b", statuses=(400, 404)),
    Bad("file-of-unknown-job", "GET", f"/jobs/{UNKNOWN}/files/pipeline.json", statuses=(404,)),
    # uploads
    Bad("upload-no-name", "POST", "/uploads", "x"),
    Bad("upload-empty-name", "POST", "/uploads?name=", "x"),
    Bad("upload-name-with-slash", "POST", "/uploads?name=a/b.jsonl", "x"),
    Bad("upload-name-encoded-traversal", "POST", "/uploads?name=..%2f..%2fescape.txt", "x"),
    Bad("upload-name-dotdot", "POST", "/uploads?name=..", "x"),
    Bad("upload-name-hidden", "POST", "/uploads?name=.bashrc", "x"),
    Bad("upload-name-nul", "POST", "/uploads?name=a%00b", "x"),
    Bad("upload-name-300-chars", "POST", "/uploads?name=" + "n" * 300, "x"),
    # methods and endpoints
    Bad("delete-a-job", "DELETE", "/jobs/{running}", statuses=(405,)),
    Bad("no-such-endpoint", "GET", "/admin", statuses=(404,)),
    # the token
    Bad("no-token", "GET", "/jobs", statuses=(401,), guarded=True),
    Bad("wrong-token", "GET", "/jobs", statuses=(401,), guarded=True, headers={"Authorization": f"Bearer {WRONG}"}),
    Bad("token-without-bearer", "GET", "/jobs", statuses=(401,), guarded=True, headers={"Authorization": TOKEN}),
    Bad("token-in-the-query", "GET", f"/jobs?token={TOKEN}", statuses=(401,), guarded=True),
    Bad("health-without-token", "GET", "/health", statuses=(401,), guarded=True),
    Bad("submit-without-token", "POST", "/jobs", {"recipe": "name: x\n"}, (401,), guarded=True),
    Bad("upload-without-token", "POST", "/uploads?name=x.jsonl", "x", (401,), guarded=True),
    Bad("upload-with-wrong-token", "POST", "/uploads?name=x.jsonl", "x", (401,), guarded=True,
        headers={"Authorization": f"Bearer {WRONG}"}),
    Bad("events-without-token", "GET", f"/jobs/{UNKNOWN}/events", statuses=(401,), guarded=True),
]


def _fill(text: str, names: dict[str, str]) -> str:
    """``text`` with each ``{name}`` of ``names`` replaced (a recipe's own braces are left alone)."""
    return re.sub(r"\{(\w+)\}", lambda m: names.get(m.group(1), m.group(0)), text)


def _send(w: World, case: Bad) -> tuple[int, dict, bytes]:
    names = w.names()
    server = w.guarded if case.guarded else w.open
    path = "/api/v1" + _fill(case.path, names)
    headers = {**({"Authorization": f"Bearer {TOKEN}"} if case.auth else {}), **case.headers}
    body = case.body
    if isinstance(body, dict):
        body = json.dumps({k: _fill(v, names) if isinstance(v, str) else v for k, v in body.items()})
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        if case.headers_only:  # the headers of a body too large to send
            conn.putrequest(case.method, path)
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.endheaders()
        elif case.chunked:
            chunks = (body[i:i + 65536].encode() for i in range(0, len(body), 65536))
            conn.request(case.method, path, body=chunks, headers={**headers, "Content-Type": "application/json"},
                         encode_chunked=True)
        else:
            data = body.encode() if isinstance(body, str) else body
            conn.request(case.method, path, body=data, headers={"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    except (http.client.HTTPException, ValueError, TypeError, OSError) as e:  # http.client on a broken reply
        pytest.fail(f"{case.id}: the server broke off its reply ({type(e).__name__}: {e})")
    finally:
        conn.close()


def _snapshot(w: World) -> dict[str, tuple]:
    """Every entry of the folder around the servers except their roots and logs: type, size, mtime, content
    hash, link target."""
    skip = {w.open.root, w.guarded.root, w.open.folder / "serve.log", w.guarded.folder / "serve.log"}
    out = {}
    for folder, dirs, files in os.walk(w.folder):
        here = Path(folder)
        dirs[:] = [d for d in dirs if here / d not in skip]
        for name in [*dirs, *files]:
            path = here / name
            if path in skip:
                continue
            st = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else None
            out[str(path.relative_to(w.folder))] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns, digest,
                                                    os.readlink(path) if path.is_symlink() else None)
    return out


def _job_ids(w: World) -> set[str]:
    return {p.name for p in (w.open.root / "jobs").iterdir()}


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)
    # a body is bytes, text or JSON: a tuple of statuses given without ``statuses=`` lands there (and is sent)
    assert all(c.body is None or isinstance(c.body, bytes | str | dict) for c in CASES)
    assert all(c.statuses and all(isinstance(x, int) for x in c.statuses) for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_request_is_one_json_line_and_changes_nothing(world, case):
    before, jobs_before = _snapshot(world), _job_ids(world)
    status, headers, raw = _send(world, case)
    text = raw.decode("utf-8", "replace")
    assert status in case.statuses, f"{case.id}: {status} {text[:300]}"
    assert headers.get("content-type", "").startswith("application/json"), f"{case.id}: {headers} {text[:200]}"
    body = json.loads(raw)
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"].strip(), text
    assert "\n" not in text and "Traceback" not in text and 'File "' not in text, text
    assert TOKEN not in text and WRONG not in text and HF_LIKE not in text, text
    assert _job_ids(world) == jobs_before, f"{case.id} created a job folder"
    assert _snapshot(world) == before, f"{case.id} changed files outside the service's root"


def test_the_running_job_and_the_server_outlived_the_corpus(world):
    """After every bad request the service still answers and the job it runs is untouched (run last)."""
    with Client(world.open.url) as client:
        assert client.health()["ok"] is True
        assert client.job(world.running)["state"] == "running"
        assert client.job(world.queued)["state"] == "queued"
