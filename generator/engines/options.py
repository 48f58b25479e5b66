"""How a stage reaches a model: ``EngineOptions`` (one construction path for every stage)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from generator.engines import Engine, make_engine


class EngineOptions(BaseModel):
    """How to reach a model; shared by every stage that runs one. Batch size and server URLs are
    runtime knobs; the engine kind and the model are part of every run's spec."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field("smollm2-135m", description="Embedded model name, local folder or Hub id.")
    engine: str = Field("auto", description="Inference engine: auto (openai when --base-url is given, else vllm "
                                            "if installed, else transformers) | vllm | openai | transformers | "
                                            "fake | module:Class.")
    base_urls: list[str] = Field(default_factory=list, description="OpenAI-compatible server URLs (openai engine).")
    batch_size: int = Field(32, ge=1, description="Prompts per engine call and per written shard.")

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
