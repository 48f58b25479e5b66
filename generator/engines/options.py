"""How a stage reaches a model: ``EngineOptions`` (one construction path for every stage)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from generator.engines import Engine, check_engine_name, make_engine


def check_base_urls(urls: list[str], engine: str) -> None:
    """Refuse, before anything loads, server URLs that cannot work: not http(s)://host[:port][/path],
    or given with an engine that would ignore them (only ``openai`` or ``auto`` talk to servers)."""
    for url in urls:
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


class EngineOptions(BaseModel):
    """How to reach a model; shared by every stage that runs one. Batch size and server URLs are
    runtime knobs; the engine kind and the model are part of every run's spec."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field("smollm2-135m", description="Embedded model name, local folder or Hub id.")
    engine: str = Field("auto", description="Inference engine: auto (openai when --base-url is given, else vllm "
                                            "if installed, else transformers) | vllm | openai | transformers | "
                                            "fake | an 'rlaif.engines' entry point | module:Class "
                                            "(a generator.engines.base.EngineBase subclass).")
    base_urls: list[str] = Field(default_factory=list, description="OpenAI-compatible server URLs (openai engine).")
    batch_size: int = Field(32, ge=1, description="Prompts per engine call and per written shard.")

    @model_validator(mode="after")
    def _checked_before_anything_loads(self) -> EngineOptions:
        if self.engine != "auto":
            check_engine_name(self.engine)  # --engine os:system is refused here, before anything is built
        check_base_urls(self.base_urls, self.engine)
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
