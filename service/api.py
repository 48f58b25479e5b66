"""The service's app: ``create_app(config) -> FastAPI`` (the API of service/routes.py; a web UI adds its pages to
the same app). ``rlaif serve`` runs it on uvicorn.

The app owns a ``Service`` (``app.state.service``, service/core.py); the app's lifespan opens it unless the
caller did first (``rlaif serve`` does, so a refusal is one line before the port is served).

Every request passes ``Guard`` (a plain ASGI middleware): with a token configured, ``Authorization: Bearer
<token>`` compared with ``hmac.compare_digest``, else 401; a body larger than the limit (``max_upload`` for
uploads, ``max_body`` otherwise) is refused with 413 before or while it is read; an exception no handler took
becomes a 500 with one line, its traceback logged with secrets masked. Every error is ``{"error": "<one
line>"}`` (the exception handlers below; SERVICE_API in README.md's "Service" section).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import traceback
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from plumbing.capture import redact
from service.config import ServiceConfig
from service.core import API, Service, version

log = logging.getLogger(__name__)


class MaskSecrets(logging.Filter):
    """Every log record with secrets masked (``redact``, and the service's token, which may come from a file)."""

    def __init__(self, token: str | None):
        super().__init__()
        self.token = token

    def _mask(self, text: str) -> str:
        return redact(text.replace(self.token, "***") if self.token else text)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = self._mask(record.msg)
        if isinstance(record.args, tuple):  # uvicorn's access formatter reads the arguments themselves
            record.args = tuple(self._mask(a) if isinstance(a, str) else a for a in record.args)
        if record.exc_info and not record.exc_text:
            record.exc_text = self._mask("".join(traceback.format_exception(*record.exc_info)).rstrip())
        return True


def quiet_secrets(config: ServiceConfig) -> None:
    """Mask secrets in every line the service's and uvicorn's log handlers write."""
    mask = MaskSecrets(config.token)
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(mask)


def error(status: int, line: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": redact(" ".join(str(line).split()))}, status_code=status, headers=headers)


class Guard:
    """Token, body size and last-resort error handling for every request (see the module docstring)."""

    def __init__(self, app, config: ServiceConfig):
        self.app, self.config = app, config

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.config.token is not None:
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, b"Bearer " + self.config.token.encode()):
                why = "a wrong token" if given else "no token"
                return await error(401, f"this service needs `Authorization: Bearer <token>`; the request had {why}",
                                   {"WWW-Authenticate": "Bearer"})(scope, receive, send)
        limit = self.config.max_upload if scope["path"] == f"{API}/uploads" else self.config.max_body
        try:
            length = int(headers.get(b"content-length", b"0"))
        except ValueError:
            return await error(400, "Content-Length is not a number")(scope, receive, send)
        if length > limit:
            return await error(413, _too_large(limit))(scope, receive, send)
        seen, started = 0, False

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise StarletteHTTPException(413, _too_large(limit))
            return message

        async def watched(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except Exception as e:  # noqa: BLE001 - the last resort: one line out, the traceback (masked) to the log
            log.error("%s %s: %s", scope.get("method"), scope.get("path"), redact(traceback.format_exc()))
            if not started:
                await error(500, f"internal error ({type(e).__name__}); the service's log has the details")(
                    scope, receive, send)


def _too_large(limit: int) -> str:
    return f"the request body is larger than the service takes ({limit:,} bytes)"


def _validation_line(exc: RequestValidationError) -> str:
    first = exc.errors()[0] if exc.errors() else {}
    loc = ".".join(str(p) for p in first.get("loc", ()))
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON"
    msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{loc}: {msg}{more}" if loc else f"{msg}{more}"


def create_app(config: ServiceConfig) -> FastAPI:
    """The service's FastAPI app; ``app.state.service`` is opened by the lifespan unless already open."""
    from service.routes import router
    from service.web import mount as mount_web

    service = Service(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.submit_lock = asyncio.Lock()  # one submission's dry run at a time (service/routes.py)
        if not service.is_open:
            service.open()
        try:
            yield
        finally:
            service.close()

    app = FastAPI(title="rlaif service", version=version(), lifespan=lifespan,
                  description="Pipeline jobs (`rlaif run` recipes) run as process groups; see README.md, 'Service'.")
    app.state.service = service

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        line = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and line == "Not Found":
            line = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            line = f"{request.method} is not an action of {request.url.path}"
        return error(exc.status_code, line, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return error(422, _validation_line(exc))

    app.include_router(router, prefix=API)
    app.add_middleware(Guard, config=config)
    mount_web(app)  # the web UI (service/web): its pages, static files and the guard wrapping every request
    return app
