"""Server credentials, kept out of every record (tests/test_secrets.py).

A server URL's ``user:password@`` part is removed before the URL reaches a config, a spec, a manifest or a
log, and kept in this process's memory only (``url_credentials``), where the openai engine finds it and sends
it as the HTTP Basic credentials the URL meant (RFC 3986 sec 3.2.1, RFC 7617). An API key is read from a file
(``RLAIF_OPENAI_API_KEY_FILE``), never taken on a command line. The engine options (generator/engines/options.py)
and the openai engine (generator/engines/openai_engine.py) both read this module; neither reads the other.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from generator.engines.base import EngineError

API_KEY_FILE_ENV = "RLAIF_OPENAI_API_KEY_FILE"  # a file holding the key: never on a command line
# scheme://userinfo@ : the userinfo runs to the last "@" before the path, query or fragment
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#]*)@")
_CREDENTIALS: dict[str, tuple[str, str]] = {}  # URL without credentials -> (user, password); memory only


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without its ``user:password@`` part, and that part percent-decoded (None if it has none)."""
    match = _USERINFO.match(url)
    if match is None:
        return url, None
    user, _, password = match["userinfo"].partition(":")
    return match["scheme"] + url[match.end():], (unquote(user), unquote(password))


def strip_credentials(url: str) -> str:
    """``url`` without credentials; they are kept in memory for the requests to that URL (``url_credentials``)."""
    clean, credentials = split_credentials(url)
    if credentials is not None:
        _CREDENTIALS[clean.rstrip("/")] = credentials
    return clean


def url_credentials(url: str) -> tuple[str, str] | None:
    """The (user, password) that came with ``url`` before ``strip_credentials`` removed them, if any."""
    return _CREDENTIALS.get(url.rstrip("/"))


def strip_credentials_everywhere(value: Any) -> Any:
    """``value`` (a parsed YAML/JSON document) with credentials stripped from every URL in it: a pipeline
    recipe carries server URLs in several stages' mappings, and the recipe itself is recorded."""
    if isinstance(value, str):
        return strip_credentials(value)
    if isinstance(value, dict):
        return {k: strip_credentials_everywhere(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(strip_credentials_everywhere(v) for v in value)
    return value


def read_api_key_file(path: str | None) -> str | None:
    """The API key in the file at ``path`` (None without a path); a missing or empty file is one clear error."""
    if not path:
        return None
    try:
        key = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise EngineError(f"API key file {path}: cannot read it ({getattr(e, 'strerror', None) or e}); "
                          f"write the key alone into a readable text file") from None
    if not key:
        raise EngineError(f"API key file {path} is empty; write the key alone into it")
    return key
