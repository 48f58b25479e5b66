"""``rlaif jobs submit | list | show | logs | cancel | retry``: the job service's client (``rlaif serve``).

    rlaif jobs submit recipes/pipeline-cpu.yaml --follow   # queue it, stream its log, exit 0 iff it succeeded
    rlaif jobs list --state running
    rlaif jobs logs JOB --follow                           # a dropped stream resumes where it stopped
    rlaif jobs cancel JOB

``--server`` (or ``RLAIF_SERVER``) names the service; its token is read from ``RLAIF_SERVICE_TOKEN`` only.
Arguments are checked before any request. A refusal (no service there, a wrong token, a 4xx) is one line and
exit code 2; a job that failed or was cancelled is its error line and exit code 1 (service/client.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

jobs_app = typer.Typer(help="Jobs of the rlaif service (`rlaif serve`): submit a recipe, follow its log, "
                            "cancel, retry.", no_args_is_help=True)
MAX_RECIPE_BYTES = 1 << 20
# service.client's DEFAULT_SERVER and SERVER_ENV, spelled here so that `rlaif --help` does not import httpx
# (0.2 s); tests/test_service_client.py checks that they agree.
DEFAULT_SERVER, SERVER_ENV = "http://127.0.0.1:8000", "RLAIF_SERVER"

_SERVER = typer.Option(DEFAULT_SERVER, "--server", envvar=SERVER_ENV,
                       help="The service's URL (its token: the RLAIF_SERVICE_TOKEN environment variable).")
_JSON = typer.Option(False, "--json", help="Print the service's JSON.")


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")


def _client(server: str):
    from service.client import Client

    return Client(server)


def _refuse(e) -> None:
    from plumbing.capture import redact

    typer.echo(redact(f"error: {e}"), err=True)
    raise typer.Exit(e.exit_code)


def _calling(fn):
    """Run ``fn()``; a ServiceError becomes its one line and exit code (never a traceback)."""
    from service.client import ServiceError

    try:
        return fn()
    except ServiceError as e:
        _refuse(e)


def _line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _follow(client, job_id: str) -> None:
    """Stream the job's log to stdout until it ends; exit 1 with its error line unless it succeeded."""
    from plumbing.capture import redact

    job = _calling(lambda: client.follow(job_id, on_line=_line))
    if job.get("state") != "succeeded":
        why = " ".join(str(job.get("error") or "").split()) or f"exit code {job.get('exit_code')}"
        typer.echo(redact(f"error: job {job_id} {job.get('state')}: {why}"), err=True)
        raise typer.Exit(1)
    typer.echo(f"job {job_id} succeeded", err=True)


def _read_recipe(recipe: Path) -> str:
    """The recipe's text, refused before any request unless it reads as ``rlaif run`` reads one: UTF-8 YAML,
    a mapping, aliases bounded (plumbing/recipes.py ``read_yaml``); the service checks the rest."""
    from plumbing.recipes import RecipeError, read_yaml
    from service.client import ServiceError

    try:
        if recipe.is_dir():
            raise ServiceError(f"{recipe}: is a folder; give a recipe YAML file")
        if not recipe.is_file():
            raise ServiceError(f"{recipe}: no such recipe file")
        if recipe.stat().st_size > MAX_RECIPE_BYTES:
            raise ServiceError(f"{recipe}: a recipe is at most {MAX_RECIPE_BYTES >> 20} MiB of YAML")
        text = recipe.read_bytes().decode("utf-8")
        read_yaml(recipe)
        return text
    except RecipeError as e:
        raise ServiceError(str(e)) from None
    except UnicodeDecodeError:
        raise ServiceError(f"{recipe}: not UTF-8 text; a recipe is a YAML file") from None
    except OSError as e:
        raise ServiceError(f"{recipe}: cannot read it ({e.strerror})") from None


def _check_sets(sets: list[str]) -> list[str]:
    from service.client import ServiceError

    for item in sets:
        key, eq, _ = item.partition("=")
        if not eq or not key.strip():
            raise ServiceError(f"--set {item!r}: write key=value, e.g. --set dpo.max_steps=4")
    return sets


@jobs_app.command("submit")
def submit(recipe: Path = typer.Argument(..., help="Pipeline recipe YAML, sent as text; the files it names must "
                                         "be uploads or lie in the service's --data-dir folders."),
           sets: list[str] = typer.Option([], "--set", help="Override a recipe key: key=value."),
           follow: bool = typer.Option(False, "--follow", "-f", help="Stream the log until the job ends; exit "
                                       "0 iff it succeeded."),
           server: str = _SERVER, as_json: bool = _JSON) -> None:
    """Queue a pipeline recipe as a job; print its id and plan."""
    def send():
        text, overrides = _read_recipe(recipe), _check_sets(sets)
        client = _client(server)
        return client, client.submit(text, overrides)

    client, job = _calling(send)
    if as_json:
        _line(json.dumps(job))
    else:
        typer.echo(f"job {job['id']} {job.get('state', 'queued')}: {job.get('name', '')}", err=follow)
        for step in job.get("plan") or []:
            typer.echo(f"  {step.get('stage', ''):9s} {step.get('action', ''):7s} {step.get('why', '')}", err=follow)
    if follow:
        _follow(client, job["id"])


@jobs_app.command("list")
def list_jobs(state: str = typer.Option(None, "--state", help="Only jobs in this state: queued, running, "
                                        "succeeded, failed, cancelled, interrupted."),
              server: str = _SERVER, as_json: bool = _JSON) -> None:
    """The service's jobs, newest first: id, state, name, created."""
    from service.client import STATES, ServiceError

    def get():
        if state is not None and state not in STATES:
            raise ServiceError(f"--state {state!r}: one of {', '.join(STATES)}")
        return _client(server).jobs(state)

    jobs = _calling(get)
    if as_json:
        _line(json.dumps({"jobs": jobs}))
        return
    for job in jobs:
        _line(f"{job.get('id')}  {job.get('state', ''):11s} {job.get('created') or '':25s} {job.get('name') or ''}")


@jobs_app.command("show")
def show(job_id: str = typer.Argument(..., metavar="ID", help="Job id (`rlaif jobs list`)."),
         server: str = _SERVER, as_json: bool = _JSON) -> None:
    """One job: its state, times, error and stages."""
    job = _calling(lambda: _client(server).job(job_id))
    if as_json:
        _line(json.dumps(job))
        return
    for key in ("id", "name", "state", "attempt", "created", "started", "finished", "exit_code", "error"):
        if job.get(key) is not None:
            _line(f"{key + ':':10s} {job[key]}")
    for stage, info in (job.get("stages") or {}).items():
        counts = ", ".join(f"{k} {v}" for k, v in (info.get("counts") or {}).items())
        seconds = f"{info['seconds']:.1f} s" if isinstance(info.get("seconds"), int | float) else ""
        _line(f"  {stage:9s} {info.get('state', ''):8s} {seconds:>9s}  {counts}")


@jobs_app.command("logs")
def logs(job_id: str = typer.Argument(..., metavar="ID", help="Job id (`rlaif jobs list`)."),
         follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming until the job ends; exit 0 "
                                     "iff it succeeded."),
         server: str = _SERVER) -> None:
    """The job's log (our stage lines on top of the libraries' output)."""
    from service.client import check_job_id

    client = _calling(lambda: (check_job_id(job_id), _client(server))[1])
    if follow:
        _follow(client, job_id)
        return
    text, _ = _calling(lambda: client.log(job_id))
    sys.stdout.buffer.write(text)
    sys.stdout.flush()


@jobs_app.command("cancel")
def cancel(job_id: str = typer.Argument(..., metavar="ID", help="Job id (`rlaif jobs list`)."),
           server: str = _SERVER) -> None:
    """Stop a queued or running job (its whole process group)."""
    job = _calling(lambda: _client(server).cancel(job_id))
    _line(f"job {job.get('id', job_id)} {job.get('state')}")


@jobs_app.command("retry")
def retry(job_id: str = typer.Argument(..., metavar="ID", help="Job id (`rlaif jobs list`)."),
          server: str = _SERVER) -> None:
    """Queue an ended job again; it resumes from its run directories."""
    job = _calling(lambda: _client(server).retry(job_id))
    _line(f"job {job.get('id', job_id)} {job.get('state')} (attempt {job.get('attempt')})")
