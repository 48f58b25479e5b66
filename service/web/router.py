"""The web UI's pages (server-rendered, Jinja2 with autoescape on for every template) and the few JSON endpoints
only the pages use (/ui/api/...). Every state change is a POST; a page never owns a job: what it starts is a
service job (POST /api/v1/jobs from the page's script), so closing the tab changes nothing.

    /ui/playground          constitution editor: lint as you type, save as a new version, versions with diffs,
                            Compare (an A/B job, service/ab_job.py) and its report
    /ui/jobs, /ui/jobs/ID   jobs with per-stage progress; a job's live log (SSE), plan, cancel/retry, report,
                            files
    /ui/jobs/ID/data        the job's preference rows, a page at a time (service/web/rows.py)
    /ui/submit              a bundled or uploaded recipe, edited and submitted
"""

from __future__ import annotations

import os
from pathlib import Path

import jinja2
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field

import service.ab_job as ab_job
import service.web.playground as playground
import service.web.report as report
import service.web.rows as rows
from service.core import API, Service, get_service, version
from service.local import RUN
from service.progress import stages
from service.routes import JOB_ID
from service.store import ENDED, STATES, public

HERE = Path(__file__).resolve().parent
RECIPES = HERE.parents[1] / "recipes"  # the repository's bundled recipes (absent from an installed wheel)
MAX_FILES = 500  # files a job page lists
ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                         undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
ENV.globals["API"] = API


def _number(value, signed: bool = False) -> str:
    return "n/a" if value is None else f"{value:+.3f}" if signed else f"{value:.3f}"


def _bounds(m: dict | None, signed: bool = False) -> str:
    if not m or m.get("lo") is None or m.get("hi") is None:
        return ""
    return f"[{_number(m['lo'], signed)}, {_number(m['hi'], signed)}]"


def _interval(m: dict | None) -> str:
    if not m or m.get("value") is None:
        return "n/a"
    count = f" ({m['k']}/{m['n']})" if "k" in m and "n" in m else ""
    return f"{_number(m['value'])} {_bounds(m)}{count}".replace("  ", " ")


ENV.filters.update(number=_number, signed=lambda v: _number(v, signed=True), bounds=_bounds, interval=_interval)
templates = Jinja2Templates(env=ENV)
router = APIRouter(prefix="/ui", include_in_schema=False)


def render(name: str, context: dict) -> str:
    return ENV.get_template(name).render(**context)


def page(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"csrf": request.state.csrf, "version": version(), **context},
                                      status_code=status)


def _job_or_none(service: Service, job_id: str) -> dict | None:
    return service.store.get(job_id) if JOB_ID.fullmatch(job_id) else None


def _missing(request: Request, job_id: str) -> HTMLResponse:
    return page(request, "error.html", 404, title="No such job", line=f"no job {job_id!r}; the jobs page lists them")


def _ab_stage(run_dir: Path, state: str) -> dict:
    """An A/B job's one stage: done once its output's manifest says complete (judge/ab_report.py)."""
    import json

    try:
        done = json.loads((run_dir / ab_job.STAGE / "manifest.json").read_text())["status"] == "complete"
    except (OSError, ValueError, KeyError, TypeError):
        done = False
    current = "done" if done and state != "running" else "running" if state == "running" else "pending"
    return {ab_job.STAGE: {"state": current, "seconds": None, "counts": {}}}


def _shown(service: Service, job: dict) -> dict:
    run_dir = service.backend.job_dir(job["id"]) / RUN
    is_ab = bool(job["plan"]) and job["plan"][0]["stage"] == ab_job.STAGE
    progress = _ab_stage(run_dir, job["state"]) if is_ab else stages(run_dir, job["plan"], job["state"] == "running")
    return {**public(job), "stages": progress, "is_ab": is_ab}


# --- pages ------------------------------------------------------------------------------------------------------


@router.get("")
@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/ui/jobs", status_code=303)


@router.get("/jobs")
def jobs_page(request: Request, state: str | None = Query(None), fragment: bool = False,
              service: Service = Depends(get_service)) -> HTMLResponse:
    state = state if state in STATES else None
    jobs = [_shown(service, j) for j in service.store.list(state)]
    return page(request, "_jobs_table.html" if fragment else "jobs.html", jobs=jobs, state=state, states=STATES)


def _files(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """The job's files (cache and logs folders left out), and its datasets: each folder of parquet shards
    (``<stage>/data``) with its shards."""
    files, datasets = [], {}
    for folder, dirs, names in os.walk(run_dir):
        dirs[:] = sorted(d for d in dirs if d not in ("cache", "logs"))
        for name in sorted(names):
            path = Path(folder) / name
            if name.startswith(".") or path.is_symlink() or not path.is_file():
                continue
            rel = path.relative_to(run_dir).as_posix()
            entry = {"path": rel, "name": name, "size": path.stat().st_size,
                     "url": report.file_url(run_dir.parent.name, rel)}
            if name.endswith(".parquet") and Path(folder).name == "data":
                group = datasets.setdefault(Path(rel).parent.as_posix(), {"folder": Path(rel).parent.as_posix(),
                                                                         "size": 0, "shards": []})
                group["size"] += entry["size"]
                group["shards"].append(entry)
            else:
                files.append(entry)
            if len(files) + sum(len(d["shards"]) for d in datasets.values()) >= MAX_FILES:
                return files, list(datasets.values())
    return files, list(datasets.values())


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str, service: Service = Depends(get_service)) -> HTMLResponse:
    job = _job_or_none(service, job_id)
    if job is None:
        return _missing(request, job_id)
    run_dir = service.backend.job_dir(job_id) / RUN
    shown = _shown(service, job)
    files, datasets = _files(run_dir)
    return page(request, "job.html", job=shown, ended=job["state"] in ENDED, files=files, datasets=datasets,
                report=None if shown["is_ab"] else report.job_report(run_dir, job_id),
                ab=report.ab_result(run_dir) if shown["is_ab"] else None,
                has_rows=bool(rows.judge_files(run_dir)))


@router.get("/jobs/{job_id}/ab")
def ab_page(request: Request, job_id: str, fragment: bool = False,
            service: Service = Depends(get_service)) -> HTMLResponse:
    """An A/B job's result: the metrics table and the flipped pairs side by side (the playground fetches the
    fragment once the job succeeded)."""
    job = _job_or_none(service, job_id)
    if job is None:
        return _missing(request, job_id)
    ab = report.ab_result(service.backend.job_dir(job_id) / RUN)
    return page(request, "_ab_result.html" if fragment else "ab.html", job=_shown(service, job), ab=ab)


def _bool(value: str | None) -> bool | None:
    return {"yes": True, "no": False}.get(value or "")


def _float(value: str | None) -> float | None:
    try:
        f = float(value) if value not in (None, "") else None
    except ValueError:
        return None
    return f if f is not None and 0.0 <= f <= 1.0 else None


@router.get("/jobs/{job_id}/data")
def data_page(request: Request, job_id: str, page_no: int = Query(0, alias="page", ge=0, le=10**9),
              principle: str | None = None, consistent: str | None = None, p_min: str | None = None,
              p_max: str | None = None, service: Service = Depends(get_service)) -> HTMLResponse:
    job = _job_or_none(service, job_id)
    if job is None:
        return _missing(request, job_id)
    filters = rows.Filters(principle or None, _bool(consistent), _float(p_min), _float(p_max))
    files = rows.judge_files(service.backend.job_dir(job_id) / RUN)
    result = rows.read_page(files, page_no, filters) if files else None
    query = {"principle": principle or "", "consistent": consistent or "", "p_min": p_min or "", "p_max": p_max or ""}
    return page(request, "data.html", job=_shown(service, job), result=result, filters=filters, query=query)


@router.get("/playground")
def playground_page(request: Request, constitution: str | None = None, sample: str | None = None,
                    service: Service = Depends(get_service)) -> HTMLResponse:
    uploads = service.config.uploads
    choices = playground.constitution_files(uploads)
    error = None
    try:
        chosen = playground.allowed_file(constitution, service.allowed, "constitution") if constitution \
            else Path(choices[0]["path"])
        principles = playground.principles(chosen)
        history = playground.version_history(uploads, chosen)
    except playground.PlaygroundError as e:
        error, chosen, principles, history = str(e), Path(choices[0]["path"]), [], []
    return page(request, "playground.html", constitutions=choices, chosen=str(chosen), principles=principles,
                samples=playground.sample_files(uploads), sample=sample or str(playground.SAMPLE), history=history,
                error=error)


@router.get("/playground/versions")
def versions_fragment(request: Request, constitution: str, service: Service = Depends(get_service)) -> HTMLResponse:
    try:
        base = playground.allowed_file(constitution, service.allowed, "constitution")
        history = playground.version_history(service.config.uploads, base)
    except playground.PlaygroundError as e:
        return page(request, "error.html", 422, title="Versions", line=str(e))
    return page(request, "_versions.html", history=history)


def bundled_recipes() -> list[str]:
    return sorted(p.name for p in RECIPES.glob("pipeline-*.yaml")) if RECIPES.is_dir() else []


@router.get("/submit")
def submit_page(request: Request) -> HTMLResponse:
    return page(request, "submit.html", recipes=bundled_recipes())


@router.get("/submit/recipe")
def bundled_recipe(name: str) -> PlainTextResponse:
    if name not in bundled_recipes():
        return PlainTextResponse(f"no bundled recipe {name!r}", status_code=404)
    return PlainTextResponse((RECIPES / name).read_text(encoding="utf-8"))


# --- what the pages' scripts call -------------------------------------------------------------------------------


class Edit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    constitution: str = Field(max_length=4096)
    edits: dict[str, dict[str, str]] = Field(default_factory=dict)


class Compare(Edit):
    sample: str = Field(max_length=4096)
    limit: int | None = Field(32, ge=1, le=100_000)
    judge: dict = Field(default_factory=dict)


def _refusal(e: Exception, status: int = 422) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(e).split())}, status_code=status)


@router.post("/api/lint")
def lint(body: Edit, service: Service = Depends(get_service)) -> JSONResponse:
    """The loader's verdict on the page's edits (its one-line error, or warnings and the sha256)."""
    try:
        base = playground.allowed_file(body.constitution, service.allowed, "constitution")
        return JSONResponse(playground.lint_edit(base, body.edits))
    except playground.PlaygroundError as e:
        return _refusal(e)


@router.post("/api/save")
def save(body: Edit, service: Service = Depends(get_service)) -> JSONResponse:
    """The edited constitution as a new version in the uploads (never over an existing file)."""
    try:
        base = playground.allowed_file(body.constitution, service.allowed, "constitution")
        return JSONResponse(playground.save_version(service.config.uploads, base, body.edits), status_code=201)
    except playground.PlaygroundError as e:
        return _refusal(e)


@router.post("/api/compare")
def compare(body: Compare, service: Service = Depends(get_service)) -> JSONResponse:
    """Write the edited text as a draft and answer the A/B recipe the page then submits as a job."""
    try:
        base = playground.allowed_file(body.constitution, service.allowed, "constitution")
        sample = playground.allowed_file(body.sample, service.allowed, "labelled sample")
        new, verdict = playground.save_draft(service.config.uploads, base, body.edits)
        text = ab_job.recipe_text(f"compare {verdict['name']}: {base.name} vs edited", base, new, sample,
                                  body.limit, body.judge)
    except (playground.PlaygroundError, ab_job.ABRefused) as e:
        return _refusal(e)
    return JSONResponse({"recipe": text, "new": str(new), "sha256": verdict["sha256"]})
