"""``rlaif serve``: the job service (service/): an HTTP API that queues pipeline recipes and runs each as its own
process group (``rlaif run RECIPE --root <root>/jobs/<id>/run``).

    rlaif serve --root runs/service                     # http://127.0.0.1:8000/docs
    rlaif serve --host 0.0.0.0 --token-file token.txt   # any other address needs a token
    rlaif jobs submit recipes/pipeline-cpu.yaml --follow
"""

from __future__ import annotations

from pathlib import Path

import typer


def serve(root: Path = typer.Option(Path("runs/service"), "--root",
                                    help="The service's folder: service.db, jobs/<id>/, uploads/."),
          host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback needs a "
                                   "token (--token-file or RLAIF_SERVICE_TOKEN)."),
          port: int = typer.Option(8000, "--port", help="TCP port."),
          max_running: int = typer.Option(1, "--max-running", help="Jobs running at once; the rest wait in "
                                          "submit order."),
          max_queued: int = typer.Option(100, "--max-queued", help="Jobs waiting at most; a submit past it is "
                                         "answered 429."),
          data_dirs: list[Path] = typer.Option([], "--data-dir", help="A folder recipes sent over HTTP may read "
                                               "(besides uploads and the bundled data); repeat for more."),
          token_file: Path = typer.Option(None, "--token-file", help="File whose first line is the bearer token "
                                          "every request must send (else RLAIF_SERVICE_TOKEN, else none)."),
          grace: float = typer.Option(5.0, "--grace", help="Seconds between SIGTERM and SIGKILL when a job is "
                                      "cancelled."),
          backend: str = typer.Option("local", "--backend", help="Where jobs run: local (process groups on this "
                                      "machine) | ray (Ray jobs on the cluster at --ray-address)."),
          ray_address: str = typer.Option(None, "--ray-address", help="The Ray dashboard's URL, e.g. "
                                          "http://HEAD:8265 (--backend ray).")) -> None:
    """Serve the job API (FastAPI on uvicorn; OpenAPI page at /docs). Jobs run as process groups of their own:
    stopping or killing the service leaves them running, and the next start adopts them."""
    import socket

    import uvicorn

    from service.api import create_app, quiet_secrets
    from service.config import ServiceConfigError, build_config

    config = build_config(root, host, port, max_running, max_queued, data_dirs, token_file, grace_s=grace,
                          backend=backend, ray_address=ray_address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ServiceConfigError(f"--host {host} --port {port}: cannot listen there ({e.strerror}); pick another "
                                 "port or stop what uses it") from None
    app = create_app(config)
    seen = app.state.service.open()
    typer.echo(f"rlaif service on http://{host}:{port} (API /api/v1, docs /docs), root {config.root}; "
               f"jobs adopted {seen['adopted']}, interrupted and re-queued {seen['interrupted']}", err=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=3))
    quiet_secrets(config)  # after uvicorn.Config, which sets up its log handlers
    server.run(sockets=[sock])


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
