"""The job service (``rlaif serve``): an HTTP API that records, schedules and reads pipeline jobs, each run as
its own process group (``rlaif run RECIPE --root <root>/jobs/<id>/run``), never inside the API process.

    service/api.py        the app factory ``create_app(config)``: errors, token, body limits, routes
    service/routes.py     the /api/v1 endpoints (jobs, log, events, files, uploads)
    service/store.py      the job store: SQLite in WAL mode at <root>/service.db, the system of record
    service/scheduler.py  starts queued jobs, watches running ones, reconciles the store with the processes
    service/local.py      the local backend: a job's process group, started, checked, ended
    service/runner.py     the wrapper each job runs in: it starts ``rlaif run`` and writes <job>/exit
    service/recipes.py    a submitted recipe checked by ``rlaif run --dry-run``'s code and the folders it may read
    service/progress.py   per-stage progress read from a job's run folder
    service/client.py     an HTTP client of the API (``rlaif jobs``)
"""
