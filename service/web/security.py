"""What keeps the web UI's pages safe: the headers of every response, a browser session for a service with a
token, and the cross-site request checks of every state-changing request.

``WebGuard`` wraps the whole app (outside the API's own ``Guard`` in service/api.py):

* Headers. Every response gets ``Content-Security-Policy: default-src 'self'`` (no inline script, no script
  from elsewhere: all JavaScript is service/web/static/*.js), ``X-Content-Type-Options: nosniff``,
  ``X-Frame-Options: DENY`` and ``Referrer-Policy: same-origin``; a job's file (GET .../files/PATH) is served
  under ``sandbox`` as well, so an HTML file a job wrote opens without script and without the service's origin.
* Session. A browser cannot send ``Authorization: Bearer``; /ui/login takes the token once and sets
  ``rlaif_session`` (HttpOnly, SameSite=Strict) to an HMAC of it, never the token itself. A request carrying a
  valid session cookie and no Authorization header is passed on with the header the API's ``Guard`` checks.
* CSRF. A POST/PUT/PATCH/DELETE is refused (403) when the browser says it comes from another site
  (``Sec-Fetch-Site`` other than same-origin/none, or an ``Origin`` other than the request's own host); and when
  it comes from a browser at all (an Origin, a Sec-Fetch-Site, a session cookie) or targets /ui/, it must echo
  the per-session token of the ``rlaif_csrf`` cookie (SameSite=Strict, set by every /ui/ page and printed in the
  page's ``<meta name="csrf-token">``) in ``X-CSRF-Token``. The API's own clients (``rlaif jobs``, curl) send
  none of these and pass as before. GET never changes anything (tests/test_web_ui.py).
* Host. When the service listens on a loopback address, a /ui/ request or a browser's state-changing request
  must name a loopback host (127.0.0.1, localhost, [::1]): a page of another site that rebinds its DNS name to
  127.0.0.1 gets 403, not the pages.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from urllib.parse import parse_qs, quote, urlsplit

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import cookie_parser

from service.config import ServiceConfig, is_loopback

SESSION, CSRF, CSRF_HEADER = "rlaif_session", "rlaif_csrf", "x-csrf-token"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PAGE_CSP = ("default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'")
FILE_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"
FILE_PATH = re.compile(r"^/api/v1/jobs/[^/]+/files/.+")
TOKEN = re.compile(r"[A-Za-z0-9_-]{32,64}")
LOGIN = "/ui/login"


def session_value(token: str) -> str:
    """The session cookie's value: an HMAC of the token (the cookie never holds the token)."""
    return hmac.new(token.encode(), b"rlaif-web-session", hashlib.sha256).hexdigest()


def is_ui(path: str) -> bool:
    return path == "/ui" or path.startswith("/ui/")


def _host_name(host: str) -> str:
    return (urlsplit(f"//{host}").hostname or "") if host else ""


def _json(status: int, line: str, extra: list[tuple[bytes, bytes]] = ()):
    body = json.dumps({"error": line}).encode()

    async def respond(send):
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]})
        await send({"type": "http.response.body", "body": body})

    return respond


class WebGuard:
    """Security headers, the browser session and the CSRF checks (module docstring)."""

    def __init__(self, app, config: ServiceConfig, login_app, static_app):
        self.app, self.config, self.login_app, self.static_app = app, config, login_app, static_app
        self.session = session_value(config.token) if config.token else None

    def cross_site(self, path: str, headers: Headers, cookies: dict) -> str | None:
        """Why a state-changing request is refused, or None."""
        site, origin = headers.get("sec-fetch-site"), headers.get("origin")
        if site is not None and site not in ("same-origin", "none"):
            return f"a {site} request cannot change anything here; use the service's own pages"
        if origin is not None and urlsplit(origin).netloc != headers.get("host", ""):
            return f"a request from {origin} cannot change anything here; use the service's own pages"
        browser = site is not None or origin is not None or SESSION in cookies
        if path == LOGIN or not (browser or is_ui(path)):
            return None
        given, expected = headers.get(CSRF_HEADER, ""), cookies.get(CSRF, "")
        if not (expected and hmac.compare_digest(given.encode(), expected.encode())):
            return "the request lacks the page's CSRF token (X-CSRF-Token); reload the page and try again"
        return None

    def wrong_host(self, path: str, method: str, headers: Headers) -> bool:
        if not is_loopback(self.config.host):
            return False
        browser_write = method in UNSAFE and ("origin" in headers or "sec-fetch-site" in headers)
        return (is_ui(path) or browser_write) and not is_loopback(_host_name(headers.get("host", "")))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        headers = Headers(scope=scope)
        cookies = cookie_parser(headers.get("cookie", ""))
        if self.wrong_host(path, method, headers):
            return await _json(403, "open the service at its loopback address (http://127.0.0.1:PORT/ui/)")(send)
        if method in UNSAFE and (why := self.cross_site(path, headers, cookies)):
            return await _json(403, why)(send)
        csrf = cookies.get(CSRF, "")
        fresh = not TOKEN.fullmatch(csrf)
        if fresh:
            csrf = secrets.token_urlsafe(32)
        scope = {**scope, "state": {**scope.get("state", {}), "csrf": csrf}}
        authed = self.session is None or "authorization" in headers
        if not authed and hmac.compare_digest(cookies.get(SESSION, "").encode(), self.session.encode()):
            scope["headers"] = [*scope["headers"], (b"authorization", f"Bearer {self.config.token}".encode())]
            authed = True
        extra = [(b"set-cookie", f"{CSRF}={csrf}; Path=/; HttpOnly; SameSite=Strict".encode())] \
            if fresh and is_ui(path) else []

        async def with_headers(message):
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                add = [(b"content-security-policy", (FILE_CSP if FILE_PATH.match(path) else PAGE_CSP).encode()),
                       (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                       (b"referrer-policy", b"same-origin")]
                message = {**message, "headers": [*message.get("headers", []),
                                                  *((k, v) for k, v in add if k not in have), *extra]}
            await send(message)

        if path.startswith("/ui/static/"):
            inner = {**scope, "path": path.removeprefix("/ui/static"), "root_path": ""}
            try:
                return await self.static_app(inner, receive, with_headers)
            except HTTPException as e:  # StaticFiles raises its 404/405 for an exception handler we are outside of
                return await _json(e.status_code, f"no static file {path}")(with_headers)
        if path == LOGIN:
            return await self.login_app(scope, receive, with_headers)
        if not authed and is_ui(path) and method == "GET":
            where = quote(path + (f"?{scope['query_string'].decode()}" if scope.get("query_string") else ""))
            return await _json(303, "log in first", [(b"location", f"{LOGIN}?next={where}".encode())])(with_headers)
        return await self.app(scope, receive, with_headers)


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a path of the UI only (never another site)."""
    value = value or ""
    return value if is_ui(urlsplit(value).path) and not urlsplit(value).netloc and value.startswith("/") \
        and not value.startswith("//") else "/ui/jobs"


def login_app(config: ServiceConfig, render):
    """The /ui/login page: GET shows the form, POST checks the token (form field ``token``) and sets the
    session cookie. ``render(name, context) -> str`` renders a template. Without a token there is nothing to
    log in to: both go to the jobs page."""
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, RedirectResponse

    async def app(scope, receive, send):
        request = Request(scope, receive)
        target = safe_next(request.query_params.get("next"))
        if config.token is None:
            response = RedirectResponse(target, status_code=303)
        elif request.method == "POST":
            form = parse_qs((await request.body()).decode("utf-8", "replace"))
            given = (form.get("token") or [""])[0].strip()
            if hmac.compare_digest(given.encode(), config.token.encode()):
                response = RedirectResponse(target, status_code=303)
                response.set_cookie(SESSION, session_value(config.token), httponly=True, samesite="strict", path="/")
            else:
                response = HTMLResponse(render("login.html", {"error": "that is not the service's token",
                                                              "next": target, "csrf": scope["state"]["csrf"]}),
                                        status_code=401)
        elif request.method == "GET":
            response = HTMLResponse(render("login.html", {"error": None, "next": target,
                                                          "csrf": scope["state"]["csrf"]}))
        else:
            response = HTMLResponse("method not allowed", status_code=405)
        await response(scope, receive, send)

    return app
