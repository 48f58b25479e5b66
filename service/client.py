"""A small HTTP client of the job service's API (``/api/v1``, served by ``rlaif serve``): what ``rlaif jobs``
and ``rlaif bench service`` talk through.

Every refusal is a ``ServiceError`` carrying one line: the server's own ``{"error": ...}`` line for a 4xx/5xx,
or what went wrong on the way (no server at the URL, a reply that is not the service's). The token comes from
``RLAIF_SERVICE_TOKEN`` (never a command line) and is sent only as ``Authorization: Bearer``.

Following a job (``Client.follow``) reads its ``/events`` stream (Server-Sent Events, the WHATWG HTML
standard's "server-sent events" section): each ``log`` event's ``id`` is the byte offset just after its line,
so after a dropped stream the client reconnects with ``Last-Event-ID: <last id>`` and the server resumes after
that byte; an event whose id is not past the last one shown is skipped, so no line is lost or shown twice
(tests/test_service_client.py drops a stream mid-event).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

DEFAULT_SERVER = "http://127.0.0.1:8000"
SERVER_ENV = "RLAIF_SERVER"
TOKEN_ENV = "RLAIF_SERVICE_TOKEN"
STATES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
ENDED = ("succeeded", "failed", "cancelled")  # "interrupted" is re-queued when the service starts again
API = "/api/v1"
_EOL = re.compile(r"\r\n|\r|\n")
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# A dropped stream is re-opened; this many tries in a row that reach no service (0.2, 0.4, ... then 2 s apart,
# about 35 s in all: a restarting service answers within seconds) give up.
RECONNECTS = 20
STREAM_IDLE_S = 60.0  # a stream silent this long is re-opened (a quiet job costs one GET a minute)


class ServiceError(Exception):
    """One line for the user; ``status`` is the HTTP status (None: no answer came)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status

    @property
    def exit_code(self) -> int:
        """2 for what the caller can fix (a refused request, a wrong URL, no server there); 1 for the server's
        own failure (5xx)."""
        return 1 if self.status is not None and self.status >= 500 else 2


def check_server_url(url: str) -> str:
    """``url`` as a base URL (no trailing slash), or a ServiceError saying what is wrong with it."""
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError) as e:
        raise ServiceError(f"--server {url!r}: not a URL ({e}); e.g. {DEFAULT_SERVER}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ServiceError(f"--server {url!r}: give an http:// or https:// URL with a host, e.g. {DEFAULT_SERVER}")
    if parsed.userinfo:
        raise ServiceError(f"--server: put no credentials in the URL; set {TOKEN_ENV} instead")
    if parsed.query or parsed.fragment:
        raise ServiceError(f"--server {url!r}: the service's address only (scheme, host, port), no query")
    return str(parsed.copy_with(path=parsed.path.rstrip("/") or "/")).rstrip("/")


def check_job_id(job_id: str) -> str:
    """A job id as the service writes it, refused before any request when it cannot be one."""
    if not _JOB_ID.fullmatch(job_id or ""):
        raise ServiceError(f"job id {job_id!r}: not a job id (letters, digits, '-', '_', '.'); "
                           "`rlaif jobs list` shows them")
    return job_id


def check_token(token: str | None) -> str | None:
    if token is not None and (not token or any(c.isspace() for c in token) or not token.isprintable()):
        raise ServiceError(f"{TOKEN_ENV}: a token is one word without spaces or control characters")
    return token or None


@dataclass(frozen=True)
class Event:
    """One server-sent event: its type (``message`` when unnamed), data and id (None when it carried none)."""

    event: str
    data: str
    id: str | None


def stream_lines(chunks: Iterable[str]) -> Iterator[str]:
    """Lines of an event stream split only where the standard splits them (CRLF, LF or CR; httpx's
    ``iter_lines`` also splits at form feeds and U+2028, which a log line may hold); a last line without its
    end is not yielded (the connection dropped inside it)."""
    pending = ""
    for chunk in chunks:
        pending += chunk
        held_cr = pending.endswith("\r")  # maybe the first half of a CRLF: decide with the next chunk
        parts = _EOL.split(pending[:-1] if held_cr else pending)
        pending = parts.pop() + ("\r" if held_cr else "")
        yield from parts


def parse_sse(lines: Iterable[str]) -> Iterator[Event]:
    """Events of a text/event-stream, line by line; an event is dispatched at its blank line, so one cut off by
    a dropped connection is never yielded (the WHATWG event-stream interpretation, without ``retry``)."""
    event, data, last_id, seen = "", [], None, False
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if seen:
                yield Event(event or "message", "\n".join(data), last_id)
            event, data, seen = "", [], False
            continue
        if line.startswith(":"):
            continue  # a comment (keep-alive)
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            event, seen = value, True
        elif field == "data":
            data.append(value)
            seen = True
        elif field == "id" and "\0" not in value:
            last_id, seen = value, True


def _error_line(response: httpx.Response, server: str) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return " ".join(body["error"].split())
    return f"{server} answered {response.status_code} {response.reason_phrase} without the service's error " \
           "line; is --server the rlaif service?"


class Client:
    """The service's endpoints as methods returning the decoded JSON; see the module docstring."""

    def __init__(self, server: str = DEFAULT_SERVER, token: str | None = None, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None):
        self.server = check_server_url(server)
        token = check_token(os.environ.get(TOKEN_ENV) if token is None else token)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.server + API, headers=headers, timeout=timeout,
                                 transport=transport, trust_env=False)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _unreachable(self, e: httpx.HTTPError) -> ServiceError:
        reason = " ".join(str(e).split()) or type(e).__name__
        return ServiceError(f"no answer from the service at {self.server} ({reason}); is `rlaif serve` running "
                            f"there? (--server, or {SERVER_ENV})")

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            raise ServiceError(_error_line(response, self.server), response.status_code)
        return response

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise self._unreachable(e) from None
        return self._check(response)

    def _json(self, method: str, path: str, **kwargs):
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ServiceError(f"{self.server}{API}{path}: the reply is not JSON; is --server the rlaif "
                               "service?", response.status_code) from None

    def health(self) -> dict:
        return self._json("GET", "/health")

    def submit(self, recipe: str, overrides: list[str] | None = None) -> dict:
        return self._json("POST", "/jobs", json={"recipe": recipe, "overrides": list(overrides or [])})

    def jobs(self, state: str | None = None) -> list[dict]:
        return self._json("GET", "/jobs", params={"state": state} if state else None)["jobs"]

    def job(self, job_id: str) -> dict:
        return self._json("GET", f"/jobs/{check_job_id(job_id)}")

    def cancel(self, job_id: str) -> dict:
        return self._json("POST", f"/jobs/{check_job_id(job_id)}/cancel")

    def retry(self, job_id: str) -> dict:
        return self._json("POST", f"/jobs/{check_job_id(job_id)}/retry")

    def upload(self, name: str, content: bytes) -> dict:
        return self._json("POST", "/uploads", params={"name": name}, content=content)

    def log(self, job_id: str, offset: int = 0) -> tuple[bytes, int]:
        """(the log's bytes from ``offset``, the offset after them)."""
        response = self.request("GET", f"/jobs/{check_job_id(job_id)}/log", params={"offset": offset})
        try:
            return response.content, int(response.headers.get("X-Log-Offset", offset + len(response.content)))
        except ValueError:
            raise ServiceError(f"{self.server}: X-Log-Offset is not a number") from None

    @contextmanager
    def events(self, job_id: str, after: int = 0) -> Iterator[Iterator[Event]]:
        """The job's event stream, resumed after byte ``after`` of its log (0: from the start)."""
        headers = {"Last-Event-ID": str(after)} if after else {}
        try:
            with self.http.stream("GET", f"/jobs/{check_job_id(job_id)}/events", headers=headers,
                                  timeout=httpx.Timeout(self.http.timeout.connect, read=STREAM_IDLE_S)) as response:
                if response.status_code >= 400:
                    response.read()
                    self._check(response)
                yield parse_sse(stream_lines(response.iter_text()))
        except httpx.ConnectError as e:
            raise self._unreachable(e) from None

    def follow(self, job_id: str, on_line: Callable[[str], None], on_state: Callable[[dict], None] = lambda j: None,
               after: int = 0, reconnects: int = RECONNECTS, sleep: Callable[[float], None] = time.sleep) -> dict:
        """Show every log line of the job once, in order, until it ends; return its last state.

        A stream that drops, goes quiet for ``STREAM_IDLE_S`` or ends while the job has not is re-opened after
        the last line shown; a job that ended is read to the end of its log (``/log?offset=``), so a stream cut
        after the final state event loses nothing. ``reconnects`` tries in a row that reach no service give up
        in a ServiceError; a refusal (unknown job, token) or no service at the first try ends at once."""
        self.job(job_id)
        offset, failures = after, 0
        while True:
            reason = "the stream ended before the job did"
            try:
                with self.events(job_id, offset) as stream:
                    for ev in stream:
                        if ev.event == "log":
                            end = _offset(ev.id)
                            if end is not None and end <= offset:
                                continue  # shown before the stream was re-opened
                            on_line(ev.data)
                            offset = end if end is not None else offset
                        elif ev.event == "state":
                            on_state(_job_json(ev.data, self.server))
            except ServiceError as e:
                if e.status is not None:
                    raise
                reason = str(e)
            except httpx.HTTPError as e:
                reason = " ".join(str(e).split()) or type(e).__name__
            try:
                job = self.job(job_id)
            except ServiceError as e:
                if e.status is not None:
                    raise
                failures += 1
                if failures > reconnects:
                    raise ServiceError(f"job {job_id}: lost the service after byte {offset} of its log "
                                       f"({reason}); `rlaif jobs logs {job_id} --follow` picks it up again") from None
                sleep(min(0.2 * 2 ** (failures - 1), 2.0))
                continue
            if job.get("state") in ENDED:
                return self._drain(job_id, job, offset, on_line)
            failures = 0
            sleep(0.2)

    def _drain(self, job_id: str, job: dict, offset: int, on_line: Callable[[str], None]) -> dict:
        rest, _ = self.log(job_id, offset)
        lines = rest.decode("utf-8", "replace").split("\n")
        for line in lines[:-1] if lines[-1] == "" else lines:
            on_line(line.removesuffix("\r"))
        return job


def _job_json(data: str, server: str) -> dict:
    try:
        job = json.loads(data)
    except ValueError:
        job = None
    if not isinstance(job, dict):
        raise ServiceError(f"{server}: a state event that is not a job's JSON; is --server the rlaif service?")
    return job


def _offset(event_id: str | None) -> int | None:
    try:
        return int(event_id) if event_id is not None else None
    except ValueError:
        return None
