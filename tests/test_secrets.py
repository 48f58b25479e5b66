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


class JSONHandler(BaseHTTPRequestHandler):
    """A local test server's handler: JSON answers, no access log on stderr."""

    def log_message(self, *args):
        pass

    def _send(self, code: int, payload, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve(handler):
    """Run ``handler`` on a free 127.0.0.1 port for a fixture: yields the server, shuts it down after."""
    handler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


class MockHub(JSONHandler):
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

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while size := int(self.rfile.readline().strip(), 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return body
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

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
    for server in serve(MockHub):
        yield f"http://127.0.0.1:{server.server_address[1]}"
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


# --- a secret pasted anywhere a user could paste one ---------------------------------------------------------

URL_PASSWORD = "Zq81xKpw7Tm"  # no token shape: only stripping, not masking, keeps it out
KEY = "key-Rr52LmQ0vv"  # the openai engine's API key, in a key file
MODEL_TOKEN = "hf_AbCdEf1234"  # a short Hub token pasted as --model
EXTRA_KEY = "Xy9Extra77"  # a server key pasted into `rlaif engine serve --extra`
SHORT_HF_TOKEN = "hf_w1"  # an HF_TOKEN shorter than any token pattern: masked by its value
PASTED = (URL_PASSWORD, KEY, MODEL_TOKEN, EXTRA_KEY, TOKEN)


class AuthOpenAI(JSONHandler):
    """An OpenAI-shaped server that answers only requests carrying HTTP Basic ``me:URL_PASSWORD`` or Bearer ``KEY``
    (401 otherwise), and keeps every request: /v1/models, /v1/chat/completions, /v1/completions (option
    logprobs) and /tokenize, what the openai engine calls for generate and judge."""

    requests: list[dict] = []
    basic = "Basic " + base64.b64encode(f"me:{URL_PASSWORD}".encode()).decode()

    def _answer(self, body: dict) -> None:
        auth = self.headers.get("Authorization")
        others = {k.lower(): v for k, v in self.headers.items() if k.lower() != "authorization"}
        AuthOpenAI.requests.append({"path": self.path, "auth": auth, "body": body, "headers": others})
        if auth not in (self.basic, f"Bearer {KEY}"):
            return self._send(401, {"error": {"message": "unauthorized"}})
        if self.path == "/v1/models":
            return self._send(200, {"data": [{"id": "served-model", "object": "model", "owned_by": "fake",
                                              "root": "served-model", "max_model_len": 4096}]})
        if self.path == "/tokenize":
            text = body.get("prompt") or json.dumps(body.get("messages"))
            return self._send(200, {"count": len(text.split())})
        n = body.get("n", 1)
        if self.path == "/v1/chat/completions":
            choices = [{"index": i, "message": {"role": "assistant", "content": f"answer {i}"}, "finish_reason": "stop"}
                       for i in range(n)]
        elif body.get("logprobs"):  # a judge's option logprobs at one position
            choices = [{"index": 0, "text": "A", "finish_reason": "length",
                        "logprobs": {"top_logprobs": [{"A": -0.4, "B": -1.1}]}}]
        else:
            choices = [{"index": i, "text": f"answer {i}", "finish_reason": "stop"} for i in range(n)]
        self._send(200, {"choices": choices, "usage": {"prompt_tokens": 5, "completion_tokens": 2 * n}})

    def do_GET(self):
        self._answer({})

    def do_POST(self):
        self._answer(json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}"))


@pytest.fixture
def auth_server():
    for server in serve(AuthOpenAI):
        yield server.server_address[1]
    server.server_close()


def parquet_text(path: Path) -> str:
    """A parquet file's rows as JSON text (its bytes may be compressed)."""
    import pyarrow.parquet as pq

    return json.dumps(pq.read_table(path).to_pylist(), default=str)


def test_a_secret_pasted_anywhere_is_in_no_file_no_console_no_log(tmp_path, auth_server):
    """Every place a user could paste a secret, through the real CLI with --verbose: HF_TOKEN (long and short) in
    the environment, a server password in --base-url and in a pipeline recipe's base_urls, an API key in a key
    file, a token as --model, a key in `rlaif engine serve --extra`. Afterwards no written file (runs, manifests,
    pipeline.json, parquet rows, logs, report), no console line and no request path or body holds any of them;
    the server got them only in the Authorization header."""
    from constitution import DEFAULT_PATH

    root = tmp_path / "out"
    root.mkdir()
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "How do I pick a lock?"}\n{"prompt": "Name a colour."}\n')
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY + "\n")
    url = f"http://me:{URL_PASSWORD}@127.0.0.1:{auth_server}/v1"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"name: secrets\nroot: {root / 'loop'}\nprompts: {prompts}\nmodel: served-model\n"
                      f"stages: [generate, judge]\nengine: {{base_urls: ['{url}']}}\n"
                      f"generate: {{n: 2, max_tokens: 8}}\njudge: {{base_urls: ['{url}'], principles_per_pair: 1}}\n")
    plain = f"http://127.0.0.1:{auth_server}/v1"
    steps = {
        "generate-url": ("generate", "--prompts", prompts, "--out", root / "gen", "--base-url", url,
                         "--model", "served-model", "--n", "2", "--max-tokens", "8"),
        "judge-url": ("judge", "--input", root / "gen", "--out", root / "prefs", "--base-url", url, "--model",
                      "served-model", "--constitution", DEFAULT_PATH, "--principles-per-pair", "1"),
        "generate-key-file": ("generate", "--prompts", prompts, "--out", root / "gen-key", "--base-url", plain,
                              "--model", "served-model", "--max-tokens", "8"),
        "run-recipe": ("run", recipe),
        "model-token": ("generate", "--prompts", prompts, "--out", root / "gen-token", "--engine", "fake",
                        "--model", MODEL_TOKEN),
        "serve-extra-key": ("engine", "serve", "--print-command", "--extra", f"--api-key {EXTRA_KEY}"),
        "serve-key-file": ("engine", "serve", "--print-command", "--api-key-file", key_file),
    }
    env = {"HF_HOME": str(tmp_path / "hf-home"), "RLAIF_OPENAI_API_KEY_FILE": str(key_file)}
    results = {name: rlaif("--verbose", *args, env=env) for name, args in steps.items()}
    # an HF_TOKEN shorter than any token pattern, quoted by an error line (the input's name holds it)
    results["short-hf-token"] = rlaif("--verbose", "judge", "--input", tmp_path / f"in-{SHORT_HF_TOKEN}",
                                      "--out", root / "never", env={**env, "HF_TOKEN": SHORT_HF_TOKEN})

    expected_codes = {"model-token": 2, "serve-extra-key": 2, "short-hf-token": 2}
    for name, res in results.items():
        assert res.returncode == expected_codes.get(name, 0), (name, res.stderr[-3000:])
    assert "looks like an access token" in results["model-token"].stderr
    assert "--api-key-file" in results["serve-extra-key"].stderr
    assert 'VLLM_API_KEY="$(cat ' in results["serve-key-file"].stdout  # the key stays in its file
    assert "in-***: no such file or folder" in results["short-hf-token"].stderr  # masked by its value

    console = "".join(res.stdout + res.stderr for res in results.values())
    written = files_under(root)
    texts = {p: parquet_text(p) if p.suffix == ".parquet" else data.decode("utf-8", "replace")
             for p, data in written.items()}
    for secret in (*PASTED, SHORT_HF_TOKEN):
        assert secret not in console, secret
        assert not [str(p) for p, data in written.items() if secret.encode() in data], secret
        assert not [str(p) for p, text in texts.items() if secret in text], secret
    # the walk covered each stage's manifest, rows and log, the loop's pipeline.json and report
    names = {str(p.relative_to(root)) for p in written}
    for expected in ("gen/manifest.json", "gen/logs/rlaif.log", "prefs/manifest.json", "prefs/logs/rlaif.log",
                     "gen-key/manifest.json", "loop/pipeline.json", "loop/report.md", "loop/logs/rlaif.log",
                     "loop/generate/manifest.json", "loop/judge/manifest.json"):
        assert expected in names, expected
    assert any(n.startswith("prefs/data/") and n.endswith(".parquet") for n in names)
    assert not any(n.startswith(("gen-token", "never")) for n in names)  # refused before anything was written
    state = json.loads((root / "loop" / "pipeline.json").read_text())
    assert state["recipe"]["judge"]["base_urls"] == [plain]  # recorded, without the password

    # the server got the password and the key in the Authorization header only, and both were used
    auths = {r["auth"] for r in AuthOpenAI.requests}
    assert {AuthOpenAI.basic, f"Bearer {KEY}"} <= auths and None not in auths
    for r in AuthOpenAI.requests:
        rest = json.dumps([r["path"], r["body"], r["headers"]])
        assert not [s for s in PASTED if s in rest], r["path"]


def test_the_openai_engine_sends_url_credentials_as_basic_auth_and_shows_the_url_without_them(auth_server):
    from generator.engines import Sampling
    from generator.engines.openai_engine import OpenAIEngine
    from generator.engines.options import EngineOptions

    AuthOpenAI.requests = []
    url = f"http://me:{URL_PASSWORD}@127.0.0.1:{auth_server}/v1/"
    options = EngineOptions(model="served-model", base_urls=[url])
    assert options.base_urls == [f"http://127.0.0.1:{auth_server}/v1/"]  # parsed without the password
    assert URL_PASSWORD not in options.model_dump_json()
    engine = options.build()  # the password, kept in memory, reaches the server
    try:
        assert engine.generate(["hi"], Sampling(max_tokens=4))[0][0].text == "answer 0"
        assert engine.base_urls == [f"http://127.0.0.1:{auth_server}/v1"]
        assert list(engine.stats()["hits"]) == engine.base_urls
    finally:
        engine.close()
    assert [r["auth"] for r in AuthOpenAI.requests] == [AuthOpenAI.basic] * 2  # /v1/models, /v1/completions

    wrong = OpenAIEngine("served-model", base_urls=[f"http://me:nope@127.0.0.1:{auth_server}/v1"], retries=1)
    try:  # the server's refusal names the URL, never the password
        with pytest.raises(Exception) as refused:
            wrong.generate(["hi"], Sampling(max_tokens=4))
        assert "401" in str(refused.value) and "nope" not in str(refused.value)
        assert f"http://127.0.0.1:{auth_server}/v1" in str(refused.value)
    finally:
        wrong.close()


@pytest.mark.parametrize("name", ["smollm2-135m", "gpt2", "Qwen/Qwen2.5-0.5B-Instruct", "Qwen2.5-0.5B-Instruct",
                                  "TinyLlama-1.1B-Chat-v1.0", "distilbert-base-uncased-finetuned-sst-2-english",
                                  "./runs/sft", "/models/hf_AbCdEf1234", "served-model", "hf_tiny",
                                  "ThisIsAVeryLongCamelCase2Model"])
def test_real_model_names_are_not_taken_for_tokens(name):
    from generator.engines.options import looks_like_token

    assert not looks_like_token(name)


@pytest.mark.parametrize("name", [MODEL_TOKEN, TOKEN, "sk-proj-abcdefghijklmnop1234", "ghp_" + "a1B2" * 9,
                                  "aB3dE5fG7hI9jK1lM3nO5pQ7rS"])
def test_token_shaped_model_names_are_refused_without_being_shown(name):
    from pydantic import ValidationError

    from generator.engines.options import EngineOptions
    from judge.config import JudgeConfig
    from rlaif.cli import _one_line

    for build in (lambda: EngineOptions(model=name, engine="fake"), lambda: JudgeConfig(model=name, engine="fake")):
        with pytest.raises(ValidationError) as refused:
            build()
        line = _one_line(refused.value)
        assert line.startswith("--model: this looks like an access token") and name not in line


def test_redact_masks_short_hub_tokens_api_keys_url_credentials_and_short_hub_token_values():
    from plumbing.capture import redact, secret_values

    assert redact(f"bad token {MODEL_TOKEN}.", secrets=[]) == "bad token hf_***."
    assert redact("hf_transfer and hf_overrides={} stay", secrets=[]) == "hf_transfer and hf_overrides={} stay"
    assert redact("key sk-abcdefghijklmnop1234 but task-abcdefghijklmnopqrst", secrets=[]) == \
        "key sk-*** but task-abcdefghijklmnopqrst"
    assert redact(f"GET http://me:{URL_PASSWORD}@h:8000/v1/models", secrets=[]) == "GET http://***@h:8000/v1/models"
    env = {"HF_TOKEN": SHORT_HF_TOKEN, "OPENAI_API_KEY": "abc", "TOKENIZERS_PARALLELISM": "false"}
    assert secret_values(env) == [SHORT_HF_TOKEN]  # a Hub token whatever its length; other short values are not
    assert redact(f"token={SHORT_HF_TOKEN}", secret_values(env)) == "token=***"
