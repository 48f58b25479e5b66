"""The /api/v1 endpoints (README.md, "Service"): jobs, their log and event stream, their files, and uploads.

Handlers that wait (a submit's dry run, a cancel's grace period, file reads) are plain ``def`` functions, which
FastAPI runs in its thread pool; the event stream is an async generator polling the log and the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from service.core import Service, get_service, version
from service.local import LOG, RUN
from service.progress import stages
from service.recipes import Refused, check
from service.scheduler import JobConflict
from service.store import ENDED, STATES, QueueFull, public

router = APIRouter()
JOB_ID = re.compile(r"[0-9a-f]{12}")
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
LOG_CHUNK = 1 << 20  # bytes of log one /log request returns at most
STREAM_POLL_S = 0.25
KEEPALIVE_S = 15.0
MAX_OVERRIDES = 200
MAX_OFFSET = 2**53  # a byte offset past any log (and the largest integer a JSON client reads exactly)


class Submit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    recipe: str = Field(description="The pipeline recipe's YAML text (what `rlaif run RECIPE` reads).")
    overrides: list[str] = Field(default_factory=list, max_length=MAX_OVERRIDES,
                                 description="`key=value` overrides, as `rlaif run --set`.")


def _job(service: Service, job_id: str) -> dict:
    job = service.store.get(job_id) if JOB_ID.fullmatch(job_id) else None
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}; GET /api/v1/jobs lists them")
    return job


def _shown(service: Service, job: dict) -> dict:
    run_dir = service.backend.job_dir(job["id"]) / RUN
    return {**public(job), "stages": stages(run_dir, job["plan"], job["state"] == "running")}


@router.get("/health")
def health(service: Service = Depends(get_service)) -> dict:
    counts = service.store.counts()
    return {"ok": True, "version": version(), "jobs": {"queued": counts["queued"] + counts["interrupted"],
                                                       "running": counts["running"]}}


@router.post("/jobs", status_code=201)
async def submit(body: Submit, request: Request, service: Service = Depends(get_service)) -> dict:
    """Check the recipe as `rlaif run --dry-run` does (with the job's run folder as its root) and queue it. One
    dry run at a time; the others wait here, in the event loop, so a burst of submissions holds no threads."""
    counts = await run_in_threadpool(service.store.counts)
    if counts["queued"] + counts["interrupted"] >= service.config.max_queued:  # before the dry run; insert checks too
        raise HTTPException(429, _full(service.config.max_queued))
    async with request.app.state.submit_lock:
        job = await run_in_threadpool(_queue, service, body)
    service.scheduler.wake()
    return job


def _queue(service: Service, body: Submit) -> dict:
    config = service.config
    job_id = secrets.token_hex(6)
    job_dir = service.backend.job_dir(job_id)
    job_dir.mkdir(parents=True)
    try:
        checked = check(body.recipe, body.overrides, job_dir, service.allowed)
        (job_dir / LOG).touch()
        job = service.store.insert(job_id, checked.name, checked.plan, body.overrides, config.max_queued)
    except Refused as e:
        shutil.rmtree(job_dir, ignore_errors=True)
        raise HTTPException(422, str(e)) from None
    except QueueFull:
        shutil.rmtree(job_dir, ignore_errors=True)
        raise HTTPException(429, _full(config.max_queued)) from None
    except BaseException:
        shutil.rmtree(job_dir, ignore_errors=True)
        raise
    return _shown(service, job)


def _full(limit: int) -> str:
    return f"queue full: {limit} jobs are waiting already; submit again once some have started (or cancel some)"


@router.get("/jobs")
def jobs(state: str | None = Query(None, description=" | ".join(STATES)),
         service: Service = Depends(get_service)) -> dict:
    if state is not None and state not in STATES:
        raise HTTPException(422, f"state {state!r}: not a job state ({', '.join(STATES)})")
    return {"jobs": [_shown(service, j) for j in service.store.list(state)]}


@router.get("/jobs/{job_id}")
def job(job_id: str, service: Service = Depends(get_service)) -> dict:
    return _shown(service, _job(service, job_id))


@router.post("/jobs/{job_id}/cancel")
def cancel(job_id: str, service: Service = Depends(get_service)) -> dict:
    """A waiting job is cancelled at once; a running one once its process group is gone (SIGTERM, a grace
    period, SIGKILL). 409 when it already ended."""
    return _act(service, job_id, service.scheduler.cancel)


@router.post("/jobs/{job_id}/retry")
def retry(job_id: str, service: Service = Depends(get_service)) -> dict:
    """Queue an ended job again; it resumes from its run directories. 409 while it is queued or running."""
    return _act(service, job_id, service.scheduler.retry)


def _act(service: Service, job_id: str, action) -> dict:
    """Run the scheduler's ``action`` on a known job (404 otherwise); 409 when the job's state forbids it."""
    _job(service, job_id)
    try:
        action(job_id)
    except JobConflict as e:
        raise HTTPException(409, str(e)) from None
    return _shown(service, _job(service, job_id))


def _read_log(path: Path, offset: int, size: int = LOG_CHUNK) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(size)
    except FileNotFoundError:
        return b""


@router.get("/jobs/{job_id}/log")
def job_log(job_id: str, offset: int = Query(0, ge=0, le=MAX_OFFSET), service: Service = Depends(get_service)) -> Response:
    """The log's bytes from byte ``offset`` (at most 1 MiB); ``X-Log-Offset`` is where the next request starts."""
    _job(service, job_id)
    data = _read_log(service.backend.job_dir(job_id) / LOG, offset)
    return Response(data, media_type="text/plain; charset=utf-8", headers={"X-Log-Offset": str(offset + len(data))})


def _log_event(line: bytes, end: int) -> str:
    text = line.decode("utf-8", "replace").removesuffix("\r")
    data = "".join(f"data: {part}\n" for part in text.split("\r"))  # a CR ends an SSE line: one field per part
    return f"event: log\nid: {end}\n{data}\n"


def _state_event(shown: dict) -> str:
    return f"event: state\ndata: {json.dumps(shown)}\n\n"


async def _events(service: Service, job_id: str, offset: int):
    """Log lines from byte ``offset`` (each event's id: the byte just after its line) and the job's state on every
    change, until the job has ended and its log is drained."""
    path = service.backend.job_dir(job_id) / LOG
    pending, last_state, quiet = b"", None, 0.0
    while True:
        job = await run_in_threadpool(service.store.get, job_id)
        ended = job["state"] in ENDED
        while True:
            data = await run_in_threadpool(_read_log, path, offset + len(pending), 256 * 1024)
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                offset += len(line) + 1
                yield _log_event(line, offset)
            if lines:
                quiet = 0.0
            if not data or not ended:
                break
        if ended and pending:  # a last line without its newline
            offset += len(pending)
            yield _log_event(pending, offset)
            pending = b""
        key = (job["state"], job["attempt"], job["finished"])
        if key != last_state:
            last_state = key
            quiet = 0.0
            yield _state_event(await run_in_threadpool(_shown, service, job))
        if ended:
            return
        if quiet >= KEEPALIVE_S:
            quiet = 0.0
            yield ": keep-alive\n\n"
        await asyncio.sleep(STREAM_POLL_S)
        quiet += STREAM_POLL_S


@router.get("/jobs/{job_id}/events")
def events(job_id: str, request: Request, offset: int | None = Query(None, ge=0, le=MAX_OFFSET),
           service: Service = Depends(get_service)) -> StreamingResponse:
    """Server-sent events: ``log`` (id = byte offset after the line) and ``state``; ``Last-Event-ID: N`` or
    ``?offset=N`` resumes after byte N."""
    _job(service, job_id)
    last = request.headers.get("last-event-id")
    if last is not None:
        if not last.strip().isdigit() or len(last.strip()) > 16 or int(last) > MAX_OFFSET:
            raise HTTPException(422, f"Last-Event-ID {last[:40]!r}: give an event's id, a byte offset of the log "
                                     f"(0 to {MAX_OFFSET})")
        offset = int(last)
    return StreamingResponse(_events(service, job_id, offset or 0), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/jobs/{job_id}/files")
def files(job_id: str, service: Service = Depends(get_service)) -> dict:
    """Every file of the job's run folder, with its size (paths relative to the run folder)."""
    _job(service, job_id)
    root = service.backend.job_dir(job_id) / RUN
    out = []
    for folder, _dirs, names in os.walk(root):  # symlinks to folders are not followed
        for name in names:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                out.append({"path": path.relative_to(root).as_posix(), "size": path.stat().st_size})
    return {"files": sorted(out, key=lambda f: f["path"])}


@router.get("/jobs/{job_id}/files/{path:path}")
def file(job_id: str, path: str, service: Service = Depends(get_service)) -> FileResponse:
    _job(service, job_id)
    root = (service.backend.job_dir(job_id) / RUN).resolve()
    target = None if "\0" in path else (root / path).resolve()
    if target is None or not target.is_relative_to(root) or not target.is_file():
        raise HTTPException(404, f"no file {path!r} in job {job_id}'s run folder; GET .../files lists them")
    return FileResponse(target)


@router.post("/uploads", status_code=201)
async def upload(request: Request, name: str = Query(..., description="The file's name, e.g. prompts.jsonl"),
                 service: Service = Depends(get_service)) -> dict:
    """Store the raw body as ``<root>/uploads/<sha256>/<name>``; a recipe names the returned path."""
    if not FILE_NAME.fullmatch(name):
        raise HTTPException(422, f"name {name!r}: a file name of letters, digits, '.', '_', '-' (no folders)")
    uploads = service.config.uploads
    fd, tmp_name = tempfile.mkstemp(prefix=".upload-", dir=uploads)
    tmp, digest, size = Path(tmp_name), hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                digest.update(chunk)
                size += len(chunk)
                await run_in_threadpool(out.write, chunk)
        sha = digest.hexdigest()
        final = uploads / sha / name
        final.parent.mkdir(exist_ok=True)
        if final.is_file():
            tmp.unlink()
        else:
            os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return {"sha256": sha, "path": str(final), "size": size}
