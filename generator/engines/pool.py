"""One engine per (engine kind, model, servers), shared by whatever serves the same model in one process: the
pipeline's stages, ``rlaif eval``'s policy, reference and judge."""

from __future__ import annotations

from typing import Any


class EnginePool:
    """One engine per (engine kind, model, servers), shared by the stages that serve the same model;
    ``close()`` frees them (before a training stage, and at the end)."""

    def __init__(self):
        self.engines: dict[tuple, Any] = {}

    def get(self, options, seed: int | None = None):
        from generator.models import display_name

        key = (options.engine_name(), display_name(options.model), tuple(options.base_urls))
        if key not in self.engines:
            self.engines[key] = options.build(seed=seed)
        return self.engines[key]

    def close(self) -> None:
        while self.engines:
            self.engines.popitem()[1].close()
