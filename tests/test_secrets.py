"""A Hugging Face token set in the environment appears nowhere: not on the console (with
``--verbose``), not in any file a stage writes (runs, logs, manifests, cards), not in an error line;
a real ``rlaif publish`` sends it to the Hub only in the Authorization header (a mock Hub on
127.0.0.1) and starts no child process that could inherit it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import BASE_ENV

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_rlaifFAKEtoken0123456789SECRET"
# Every new Python process (forked or started) notes its pid and whether HF_TOKEN is in its environment.
RECORDER = """
import json, os
def _note(kind):
    with open(os.environ["RLAIF_TEST_PROCESS_LOG"], "a") as f:
        f.write(json.dumps({"kind": kind, "pid": os.getpid(), "ppid": os.getppid(),
                            "has_token": "HF_TOKEN" in os.environ}) + "\\n")
if os.environ.get("RLAIF_TEST_PROCESS_LOG"):
    _note("start")
    os.register_at_fork(after_in_child=lambda: _note("fork"))
"""


def rlaif(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlaif", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=str(ROOT), env={**BASE_ENV, "HF_TOKEN": TOKEN, **(env or {})})


def files_under(*folders: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for folder in folders for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, shared_data):
    """Every stage through the real CLI with --verbose and HF_TOKEN set, on tiny inputs (fake engine)."""
    from constitution import DEFAULT_PATH

    root = tmp_path_factory.mktemp("secrets")
    prompts = root / "prompts.jsonl"
    prompts.write_text('{"prompt": "How do I pick a lock?"}\n{"prompt": "Name a colour."}\n')
    hf_home = root / "hf-home"
    env = {"HF_HOME": str(hf_home)}
    steps = {
        "lint": ("constitution", "lint", DEFAULT_PATH),
        "generate": ("generate", "--prompts", prompts, "--out", root / "gen", "--engine", "fake", "--n", "2"),
        "revise": ("revise", "--prompts", prompts, "--out", root / "sft", "--engine", "fake",
                   "--constitution", DEFAULT_PATH),
        "judge": ("judge", "--input", root / "gen", "--out", root / "prefs", "--engine", "fake",
                  "--constitution", DEFAULT_PATH),
        "judge-eval": ("judge-eval", "--human", shared_data / "hh-rlhf-harmless-base-test.jsonl.gz", "--limit", "3",
                       "--out", root / "eval", "--engine", "fake"),
        "publish": ("publish", root / "prefs", "--repo-id", "my-org/cai-prefs", "--constitution", DEFAULT_PATH,
                    "--dry-run", root / "dry"),
    }
    results = {name: rlaif("--verbose", *args, env=env) for name, args in steps.items()}
    return root, results


def test_no_stage_prints_or_writes_the_token(pipeline):
    root, results = pipeline
    for name, res in results.items():
        assert res.returncode == 0, (name, res.stderr[-3000:])
        assert TOKEN not in res.stdout + res.stderr, name
    written = files_under(root)
    leaks = [str(p) for p, data in written.items() if TOKEN.encode() in data]
    assert not leaks, leaks
    # the walk covered what matters: each run's log and manifest, the eval report, the card
    names = {str(p.relative_to(root)) for p in written}
    for expected in ("gen/logs/rlaif.log", "gen/manifest.json", "sft/logs/rlaif.log", "prefs/logs/rlaif.log",
                     "prefs/manifest.json", "eval/logs/rlaif.log", "eval/metrics.json", "dry/README.md"):
        assert expected in names, expected
    assert not any(n.startswith("dry/logs") for n in names)  # the dry run stays the exact upload


def test_an_error_line_that_quotes_the_token_masks_it(pipeline):
    root, _ = pipeline
    res = rlaif("publish", root / "prefs", "--repo-id", f"me/{TOKEN}!", "--dry-run", root / "dry-bad")
    assert res.returncode == 2 and res.stderr.startswith("error: ") and res.stderr.count("\n") == 1
    assert "--repo-id 'me/***!'" in res.stderr  # the message is kept, the token masked
    assert TOKEN not in res.stdout + res.stderr


def test_one_line_masks_hub_tokens_and_secret_environment_values(monkeypatch):
    from judge.errors import JudgeError
    from rlaif.cli import _one_line

    monkeypatch.setenv("OPENAI_API_KEY", "sk-local-0123456789")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # a name containing TOKEN is not a secret
    assert _one_line(JudgeError(f"server said: bad token {TOKEN}\n(retry)")) == "server said: bad token hf_*** (retry)"
    assert _one_line(ValueError("key sk-local-0123456789 refused")) == "key *** refused"
    assert _one_line(FileNotFoundError(2, "nope", f"/tmp/{TOKEN}.txt")) == "/tmp/hf_***.txt: no such file or folder"
    assert _one_line(ValueError("false alarm")) == "false alarm"


class MockHub(BaseHTTPRequestHandler):
    """The Hub endpoints huggingface_hub 2.4's create_repo + upload_folder call, answered minimally:
    every file is a "regular" upload (base64 in the commit), so neither LFS nor Xet is needed.
    Repository names starting with ``echo`` answer 401 with the request's Authorization echoed in
    X-Request-Id, as a careless proxy might (huggingface_hub puts a request id on the first
    line of its error message, the line ``rlaif publish`` shows)."""

    requests: list[dict] = []

    def do_GET(self):
        self._answer()

    def do_POST(self):
        self._answer()

    def log_message(self, *args):  # no access log on stderr
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while size := int(self.rfile.readline().strip(), 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return body
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, code: int, payload, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _answer(self) -> None:
        body = self._body()
        MockHub.requests.append({"method": self.command, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                 "body": body})
        path = self.path.split("?")[0]
        base = f"http://{self.headers['Host']}"
        if path == "/api/repos/create":
            name = json.loads(body)
            if name["name"].startswith("echo"):
                echo = str(self.headers.get("Authorization"))
                return self._send(401, {"error": "invalid credentials"}, {"X-Request-Id": echo})
            return self._send(200, {"url": f"{base}/datasets/{name['organization']}/{name['name']}"})
        if path == "/api/validate-yaml":
            return self._send(200, {"errors": [], "warnings": []})
        if "/tree/" in path:
            return self._send(200, [])
        if "/preupload/" in path:
            files = json.loads(body)["files"]
            return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                              for f in files]})
        if "/commit/" in path:  # /api/datasets/ORG/NAME/commit/main
            repo = path.removeprefix("/api/").split("/commit/")[0]
            return self._send(200, {"commitUrl": f"{base}/{repo}/commit/{'0' * 40}", "commitOid": "0" * 40})
        return self._send(404, {"error": f"not mocked: {path}"})


@pytest.fixture
def mock_hub():
    MockHub.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), MockHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_real_publish_sends_the_token_only_in_the_authorization_header(pipeline, mock_hub, tmp_path):
    from constitution import DEFAULT_PATH

    root, _ = pipeline
    hf_home, processes = tmp_path / "hf-home", tmp_path / "processes.jsonl"
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(RECORDER)
    env = {"HF_ENDPOINT": mock_hub, "HF_HUB_OFFLINE": "0", "HF_HOME": str(hf_home), "HF_HUB_VERBOSITY": "debug",
           "PYTHONPATH": str(tmp_path / "site"), "RLAIF_TEST_PROCESS_LOG": str(processes)}
    res = rlaif("--verbose", "publish", root / "prefs", "--repo-id", "my-org/cai-prefs",
                "--constitution", DEFAULT_PATH, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().endswith(f"to {mock_hub}/datasets/my-org/cai-prefs")
    assert TOKEN not in res.stdout + res.stderr

    # the upload happened, and carried exactly the dry run's files
    commits = [r for r in MockHub.requests if "/commit/" in r["path"]]
    assert len(commits) == 1
    ops = [json.loads(line) for line in commits[0]["body"].decode().splitlines()]
    uploaded = {op["value"]["path"]: base64.b64decode(op["value"]["content"]) for op in ops if op["key"] == "file"}
    dry = root / "dry"
    assert set(uploaded) == {str(p.relative_to(dry)) for p in dry.rglob("*") if p.is_file()}
    assert uploaded["README.md"] == (dry / "README.md").read_bytes()

    # the token: in the Authorization header of the authenticated calls, nowhere else in any request
    authed = [r for r in MockHub.requests if r["headers"].get("authorization") == f"Bearer {TOKEN}"]
    assert {"/api/repos/create", "/api/validate-yaml"} <= {r["path"].split("?")[0] for r in authed}
    assert all("/commit/" not in r["path"] or r in authed for r in MockHub.requests)
    for r in MockHub.requests:
        others = {k: v for k, v in r["headers"].items() if k != "authorization"}
        assert TOKEN not in r["path"] and TOKEN.encode() not in r["body"] and TOKEN not in json.dumps(others), r["path"]

    # no file written anywhere (run, Hub cache) holds it, and no child process inherited it
    assert not [p for p, data in files_under(root, hf_home).items() if TOKEN.encode() in data]
    started = [json.loads(line) for line in processes.read_text().splitlines()]
    assert len(started) == 1 and started[0]["kind"] == "start", started  # the CLI itself, no children


def test_a_hub_error_that_echoes_the_token_is_one_masked_line(pipeline, mock_hub, tmp_path):
    root, _ = pipeline
    res = rlaif("publish", root / "prefs", "--repo-id", "my-org/echo-prefs",
                env={"HF_ENDPOINT": mock_hub, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf-home")})
    assert res.returncode == 2, res.stderr[-3000:]
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1
    assert TOKEN not in res.stdout + res.stderr
    assert "Hub upload to my-org/echo-prefs failed: Client error '401 Unauthorized'" in res.stderr
    assert "(Request ID: Bearer ***)" in res.stderr  # the echo was on the line shown, masked


def test_every_package_we_ship_counts_as_ours():
    """The one-line error path (and its redaction) covers every exception class of every package the
    wheel ships: a package missing from OUR_PACKAGES would show its errors as tracebacks."""
    import tomllib

    from rlaif.cli import OUR_PACKAGES, is_user_error

    includes = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    shipped = {pattern.rstrip("*") for pattern in includes}
    assert shipped == set(OUR_PACKAGES)
    for package in shipped:
        error = type("SomeError", (ValueError,), {"__module__": f"{package}.module"})
        assert is_user_error(error("bad input")), package
    assert not is_user_error(RuntimeError("a bug"))
