"""What one service instance is given: its root, its limits and the folders a recipe sent over HTTP may read."""

from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

TOKEN_ENV = "RLAIF_SERVICE_TOKEN"
MIN_TOKEN = 16  # a shorter token is guessable over a network


class ServiceConfigError(ValueError):
    """A setting the operator can fix, in one line."""


@dataclass(frozen=True)
class ServiceConfig:
    root: Path
    host: str = "127.0.0.1"
    port: int = 8000
    max_running: int = 1
    max_queued: int = 100  # jobs waiting (queued or interrupted); one more is answered 429
    data_dirs: tuple[Path, ...] = ()
    token: str | None = field(default=None, repr=False)
    max_body: int = 1 << 20  # bytes of a JSON request (a recipe is a few kB)
    max_upload: int = 1 << 30  # bytes of one upload
    grace_s: float = 5.0  # SIGTERM -> this long -> SIGKILL
    poll_s: float = 0.25  # how often the scheduler looks at the processes
    backend: str = "local"  # where jobs run: local process groups | ray (service/backend.py)
    ray_address: str | None = None  # the Ray dashboard's URL (backend ray)

    @property
    def db(self) -> Path:
        return self.root / "service.db"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(token_file: Path | None, environ: dict[str, str] | None = None) -> str | None:
    """The bearer token: the first line of ``token_file``, else ``RLAIF_SERVICE_TOKEN``, else None."""
    env = os.environ if environ is None else environ
    if token_file is not None:
        try:
            text = Path(token_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ServiceConfigError(f"--token-file {token_file}: cannot read it ({type(e).__name__})") from None
        token, where = (text.splitlines() or [""])[0].strip(), f"--token-file {token_file}"
    elif env.get(TOKEN_ENV):
        token, where = env[TOKEN_ENV].strip(), TOKEN_ENV
    else:
        return None
    if len(token) < MIN_TOKEN or any(c.isspace() for c in token) or not token.isprintable():
        raise ServiceConfigError(f"{where}: a token is one word of at least {MIN_TOKEN} printable characters "
                                 "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    return token


def build_config(root: Path, host: str, port: int, max_running: int, max_queued: int, data_dirs: list[Path],
                 token_file: Path | None, grace_s: float = 5.0, backend: str = "local",
                 ray_address: str | None = None) -> ServiceConfig:
    """The checked settings of ``rlaif serve``; a wrong one is a ServiceConfigError naming the option."""
    token = read_token(token_file)
    if not is_loopback(host) and token is None:
        raise ServiceConfigError(f"--host {host}: an address other than 127.0.0.1 needs a token (--token-file F "
                                 f"or {TOKEN_ENV}); every request then sends `Authorization: Bearer <token>`")
    if not 0 < port < 65536:
        raise ServiceConfigError(f"--port {port}: give a port from 1 to 65535")
    if max_running < 1 or max_queued < 1:
        raise ServiceConfigError("--max-running and --max-queued: give at least 1")
    if not (math.isfinite(grace_s) and grace_s >= 0):
        raise ServiceConfigError(f"--grace {grace_s}: give the seconds between SIGTERM and SIGKILL, 0 or more")
    dirs = []
    for d in data_dirs:
        if not Path(d).is_dir():
            raise ServiceConfigError(f"--data-dir {d}: no such folder")
        dirs.append(Path(d).resolve())
    root = Path(root).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise ServiceConfigError(f"--root {root}: not a folder")
    if backend not in ("local", "ray") or (backend == "ray") != (ray_address is not None):
        raise ServiceConfigError(f"--backend {backend}{f' --ray-address {ray_address}' if ray_address else ''}: "
                                 "give --backend local, or --backend ray with --ray-address http://HEAD:8265")
    return ServiceConfig(root=root, host=host, port=port, max_running=max_running, max_queued=max_queued,
                         data_dirs=tuple(dirs), token=token, grace_s=grace_s, backend=backend,
                         ray_address=ray_address)
