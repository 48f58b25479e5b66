"""The job service's web UI: pages of the same app as the API (``rlaif serve``, then http://127.0.0.1:8000/ui/).

    service/web/router.py     the pages and the JSON endpoints only they use
    service/web/security.py   security headers, the browser session, the CSRF and host checks
    service/web/playground.py constitutions edited in the page: lint, versions, diffs, A/B drafts
    service/ab_job.py     a job that is an ``rlaif constitution ab`` command
    service/web/rows.py       a job's preference rows, a page at a time
    service/web/report.py     report.md and the A/B result as HTML
    service/web/templates/    Jinja2 templates (autoescape on); static/ the pages' CSS and JavaScript (no CDN)
"""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"


def mount(app) -> None:
    """Add the UI to the service's app: its pages under /ui, its static files under /ui/static, and the guard
    that wraps every request (service/web/security.py), outside the API's own token check."""
    from starlette.staticfiles import StaticFiles

    from service.web.router import render, router
    from service.web.security import WebGuard, login_app

    config = app.state.service.config
    app.include_router(router)
    app.add_middleware(WebGuard, config=config, login_app=login_app(config, render),
                       static_app=StaticFiles(directory=STATIC))
