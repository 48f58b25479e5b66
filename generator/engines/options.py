"""How a stage reaches a model: ``EngineOptions`` (one construction path for every stage).

Secrets stay out of every record (tests/test_secrets.py). A server URL is parsed as ``ServerURL``:
its ``user:password@`` part is removed before the URL reaches a config, a spec, a manifest or a
log, and kept in this process's memory only (``url_credentials``), where the openai engine finds it
and sends it as the HTTP Basic credentials the URL meant (RFC 3986 sec 3.2.1, RFC 7617). A model
name is parsed as ``ModelName``: one shaped like an access token (``hf_...``, ``sk-...``, a long
random string) is refused without being shown, since the model name is written into every row.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from generator.engines import Engine, check_engine_name, make_engine

# scheme://userinfo@ : the userinfo runs to the last "@" before the path, query or fragment
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#]*)@")
_CREDENTIALS: dict[str, tuple[str, str]] = {}  # URL without credentials -> (user, password); memory only
# Token shapes: Hugging Face (hf_), OpenAI and most LLM APIs (sk-), GitHub (ghp_, github_pat_), Slack (xox?-).
_TOKEN_SHAPE = re.compile(r"(?:hf_[A-Za-z0-9]{8,}|sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}"
                          r"|github_pat_\w{20,}|xox[abprs]-[A-Za-z0-9-]{10,})")
RANDOM_RUN = 24  # a run of letters and digits this long, mixing cases and digits, is a key, not a model name


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


def looks_like_token(name: str) -> bool:
    """Is ``name`` shaped like an access token rather than a model? Hub ids (``org/name``) and paths hold a
    ``/``, model names are words and numbers (``smollm2-135m``, ``Qwen2.5-0.5B-Instruct``); a token is a
    known prefix or a long run mixing lower case, upper case and digits (tests/test_secrets.py)."""
    if "/" in name or os.sep in name or os.path.isdir(name):
        return False
    if _TOKEN_SHAPE.search(name):
        return True
    runs = re.findall(rf"[A-Za-z0-9]{{{RANDOM_RUN},}}", name)
    return any(min(sum(c.isdigit() for c in r), sum(c.isupper() for c in r), sum(c.islower() for c in r)) >= 2
               for r in runs)


def check_model_name(name: str) -> str:
    """Refuse a model name shaped like a token, without repeating it (it would be written into every row)."""
    if looks_like_token(name):
        raise ValueError("this looks like an access token, not a model name (not shown); give an embedded name, "
                         "a model folder or a Hub id, and pass tokens in HF_TOKEN or a key file "
                         "(RLAIF_OPENAI_API_KEY_FILE, `rlaif engine serve --api-key-file`)")
    return name


ServerURL = Annotated[str, AfterValidator(strip_credentials)]
ModelName = Annotated[str, AfterValidator(check_model_name)]


def check_base_urls(urls: list[str], engine: str) -> None:
    """Refuse, before anything loads, server URLs that cannot work: not http(s)://host[:port][/path],
    or given with an engine that would ignore them (only ``openai`` or ``auto`` talk to servers)."""
    for url in (split_credentials(u)[0] for u in urls):  # a message never repeats a password
        try:
            parts = urlsplit(url)
            port = parts.port  # raises on a port that is not a number in 0..65535
        except ValueError as e:
            raise ValueError(f"--base-url {url!r} is not a valid URL ({e}); use e.g. http://127.0.0.1:8000/v1") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
            raise ValueError(f"--base-url {url!r} is not an http(s)://host[:port] URL; use e.g. "
                             f"http://127.0.0.1:8000/v1")
    if urls and engine not in ("auto", "openai"):
        raise ValueError(f"--base-url is only used by the openai engine, but --engine is {engine!r}; "
                         f"pass --engine openai (or leave --engine auto)")


# How a model is reached and batched, never what it computes: the fields of EngineOptions (and of every config
# that carries them: JudgeConfig, a GRPO judge reward) that a run's spec leaves out (generator/generate.py
# base_spec, judge/config.py JudgeConfig.runtime) and `rlaif run`'s fingerprints too (pipeline/loop.py).
RUNTIME_FIELDS = ("base_urls", "batch_size")


class EngineOptions(BaseModel):
    """How to reach a model; shared by every stage that runs one. Batch size and server URLs are
    runtime knobs; the engine kind and the model are part of every run's spec."""

    model_config = ConfigDict(extra="forbid")
    model: ModelName = Field("smollm2-135m", description="Embedded model name, local folder or Hub id.")
    engine: str = Field("auto", description="Inference engine: auto (openai when --base-url is given, else vllm "
                                            "if installed, else transformers) | vllm | openai | transformers | "
                                            "fake | an 'rlaif.engines' entry point | module:Class "
                                            "(a generator.engines.base.EngineBase subclass).")
    base_urls: list[ServerURL] = Field(default_factory=list, description="OpenAI-compatible server URLs (openai "
                                       "engine); credentials in a URL are kept in memory only.")
    batch_size: int = Field(32, ge=1, description="Prompts per engine call and per written shard.")

    @model_validator(mode="after")
    def _checked_before_anything_loads(self) -> EngineOptions:
        if self.engine != "auto":
            check_engine_name(self.engine)  # --engine os:system is refused here, before anything is built
        check_base_urls(self.base_urls, self.engine)
        if self.engine_name() == "openai":  # a key file that cannot be read fails now, not after the output exists
            from generator.engines.openai_engine import API_KEY_FILE_ENV, read_api_key_file

            read_api_key_file(os.environ.get(API_KEY_FILE_ENV))
        if self.engine_name() in ("vllm", "transformers"):  # a server's model name is the server's business
            from generator.models import check_local_model

            check_local_model(self.model)
        return self

    def engine_name(self) -> str:
        if self.engine != "auto":
            return self.engine
        if self.base_urls:
            return "openai"
        import importlib.util

        return "vllm" if importlib.util.find_spec("vllm") is not None else "transformers"

    def build(self, seed: int | None = None) -> Engine:
        """The engine, with its engine-wide sampling ``seed`` (the run's spec seed)."""
        name = self.engine_name()
        kwargs: dict = {"base_urls": self.base_urls} if name == "openai" and self.base_urls else {}
        if seed is not None:
            kwargs["seed"] = seed
        return make_engine(name, self.model, **kwargs)  # engines resolve embedded names themselves


def provenance(options: EngineOptions, engine: Engine | None = None) -> dict:
    """What made a stage's rows: the engine kind and the model it serves (part of every spec, so
    resuming with another engine or model is refused like any spec change). An engine passed in
    (tests, notebooks) speaks for itself; otherwise the options say what will be built."""
    from generator.models import display_name

    if engine is not None:
        return {"engine": engine.name, "model": display_name(engine.model)}
    return {"engine": options.engine_name(), "model": display_name(options.model)}


def check_served(engine: Engine, model: str) -> dict:
    """Refuse an engine that serves another model than the spec's ``model`` (the rows would name the
    wrong one); return what it actually serves, for the manifest's runtime history (openai: the
    server's /v1/models card; in-process engines: the folder loaded and the dtype)."""
    from generator.engines.base import EngineError
    from generator.models import display_name

    if display_name(engine.model) != model:
        raise EngineError(f"the engine serves {display_name(engine.model)!r}, not {model!r}; "
                          f"the rows would name the wrong model")
    card = getattr(engine, "served_card", None)
    if card:
        return {"id": card.get("id"), "root": card.get("root"), "base_urls": getattr(engine, "base_urls", None)}
    return {"path": getattr(engine, "path", None), "dtype": getattr(engine, "dtype", None)}
