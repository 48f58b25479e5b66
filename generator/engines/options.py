"""How a stage reaches a model: the engine settings every config that runs a model reuses (``EngineChoice``,
``EngineSettings``, ``BatchSize``: each field, its check and its description declared here only), and
``EngineOptions``, the one construction path of an engine (``build``; shared engines: generator/engines/pool.py).

Secrets stay out of every record (tests/test_secrets.py). A server URL is parsed as ``ServerURL``: its
``user:password@`` part is removed and kept in memory (generator/engines/credentials.py). A model name is parsed
as ``ModelName``: one shaped like an access token (``hf_...``, ``sk-...``, a long random string) is refused
without being shown, since the model name is written into every row.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from generator.engines import Engine, check_engine_name, make_engine
from generator.engines.credentials import (
    API_KEY_FILE_ENV,
    read_api_key_file,
    split_credentials,
    strip_credentials,
    strip_credentials_everywhere,
    url_credentials,
)

__all__ = ["RUNTIME_FIELDS", "BatchSize", "EngineChoice", "EngineOptions", "EngineSettings", "ModelName", "ServerURL",
           "check_base_urls", "check_model_name", "check_served", "looks_like_token", "provenance",
           "split_credentials", "strip_credentials", "strip_credentials_everywhere", "url_credentials"]

# Token shapes: Hugging Face (hf_), OpenAI and most LLM APIs (sk-), GitHub (ghp_, github_pat_), Slack (xox?-).
_TOKEN_SHAPE = re.compile(r"(?:hf_[A-Za-z0-9]{8,}|sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}"
                          r"|github_pat_\w{20,}|xox[abprs]-[A-Za-z0-9-]{10,})")
RANDOM_RUN = 24  # a run of letters and digits this long, mixing cases and digits, is a key, not a model name


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


# How a model is reached and batched, never what it computes: the fields of the engine settings (EngineOptions,
# JudgeConfig, a GRPO judge reward, a pipeline recipe's `engine:`) that a run's spec leaves out
# (generator/generate.py base_spec, judge/config.py JudgeConfig.runtime) and `rlaif run`'s fingerprints too
# (pipeline/fingerprints.py).
RUNTIME_FIELDS = ("base_urls", "batch_size", "replicas", "num_gpus", "ray_address")

# Items per engine call: each config that batches states its own default with this one declaration.
BatchSize = Annotated[int, Field(ge=1, description="Items (prompts; pairs for a judge) per engine call and per "
                                                   "written shard: a runtime knob, never part of a run's spec.")]


class EngineChoice(BaseModel):
    """Which engine, at which servers: the fields every config that runs a model shares (EngineSettings adds
    the model; a pipeline recipe's ``engine:`` takes its model from the recipe). A name that is no engine, a
    URL that cannot work or an API key file that cannot be read is refused here, before anything loads."""

    engine: str = Field("auto", description="Inference engine: auto (openai when --base-url is given, else vllm "
                                            "if installed, else transformers) | vllm | openai | transformers | "
                                            "fake | an 'rlaif.engines' entry point | module:Class "
                                            "(a generator.engines.base.EngineBase subclass).")
    base_urls: list[ServerURL] = Field(default_factory=list, description="OpenAI-compatible server URLs (openai "
                                       "engine; `rlaif engine serve`); credentials in a URL are kept in memory "
                                       "only. A runtime knob, never part of a run's spec.")
    # the ray engine's placement (generator/engines/ray_replicas.py); runtime knobs, never part of a run's spec
    replicas: int | None = Field(None, description="Ray engine: vLLM servers placed as Ray actors (default 1).")
    num_gpus: float | None = Field(None, description="Ray engine: GPUs of each replica (default 0: CPU servers).")
    ray_address: str | None = Field(None, description="Ray engine: the cluster's address (default RAY_ADDRESS, "
                                                      "else a Ray instance started for this process).")

    @model_validator(mode="after")
    def _engine_checked_before_anything_loads(self):
        if self.engine != "auto":
            check_engine_name(self.engine)  # --engine os:system is refused here, before anything is built
        check_base_urls(self.base_urls, self.engine)
        from generator.engines.ray_replicas import check_ray_settings

        check_ray_settings(self.engine_name(), self.replicas, self.num_gpus, self.ray_address)
        if self.engine_name() == "openai":  # a key file that cannot be read fails now, not after the output exists
            read_api_key_file(os.environ.get(API_KEY_FILE_ENV))
        return self

    def engine_name(self) -> str:
        """The engine ``auto`` stands for: openai with servers, else vllm if installed, else transformers."""
        if self.engine != "auto":
            return self.engine
        if self.base_urls:
            return "openai"
        import importlib.util

        return "vllm" if importlib.util.find_spec("vllm") is not None else "transformers"


class EngineSettings(EngineChoice):
    """The engine settings of one model (EngineOptions, judge/config.py JudgeConfig, align/rewards/judge.py
    JudgeReward): the model, and how it is reached."""

    # Whether a model named by a path must be a folder when the config is made (else: when its engine options
    # are, still before anything loads); a config may name a folder that an earlier stage of `rlaif run` writes.
    check_model_folder: ClassVar[bool] = True
    model: ModelName = Field("smollm2-135m", description="Embedded model name, local folder or Hub id (with "
                                                         "base_urls: the name the servers serve).")

    @model_validator(mode="after")
    def _model_checked_before_anything_loads(self):
        if self.check_model_folder and self.engine_name() in ("vllm", "transformers"):  # a server's is its business
            from generator.models import check_local_model

            check_local_model(self.model)
        return self


class EngineOptions(EngineSettings):
    """How to reach a model and how to build its engine; shared by every stage that runs one. Batch size and
    server URLs are runtime knobs; the engine kind and the model are part of every run's spec."""

    model_config = ConfigDict(extra="forbid")
    batch_size: BatchSize = 32

    def engine_kwargs(self) -> dict[str, Any]:
        """What this use of the model adds to building its engine (none here; the judge's engine settings:
        judge/config.py JudgeEngineOptions). Not part of a run's spec: how the model is run, not what it computes."""
        return {}

    def build(self, seed: int | None = None, **extra: Any) -> Engine:
        """The engine, with its engine-wide sampling ``seed`` (the run's spec seed), ``engine_kwargs()`` and
        ``extra`` (an engine shared by several uses carries the settings of each: generator/engines/pool.py)."""
        name = self.engine_name()
        kwargs: dict = {"base_urls": self.base_urls} if name == "openai" and self.base_urls else {}
        if name == "ray":
            kwargs.update(replicas=self.replicas or 1, num_gpus=self.num_gpus or 0.0, ray_address=self.ray_address)
        if seed is not None:
            kwargs["seed"] = seed
        return make_engine(name, self.model, **kwargs, **{**self.engine_kwargs(), **extra})


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
