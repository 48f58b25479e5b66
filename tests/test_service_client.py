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
