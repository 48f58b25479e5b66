"""The one engine pool: one engine per (engine kind, model, servers), shared by whatever serves the same model
in one process: the pipeline's stages (pipeline/loop.py), ``rlaif eval``'s policy, reference and judge
(evaluation/evaluate.py), the GRPO judge reward (align/rewards/judge.py).

An engine is built from ``EngineOptions`` (generator/engines/options.py), with what that use adds to building it
(``EngineOptions.engine_kwargs``: the judge's CPU KV-block size, judge/config.py). Uses of one model share its
engine, so the engine they share carries the settings of each: the settings of every use ``plan``ned before the
engine is built, and a use that asks for settings the built engine lacks has it rebuilt with them (the old one
is closed first: two in-process engines of one model may not fit the machine). A caller's own engines are never
built or closed here. ``release`` closes the engines no later use needs; ``close`` all of them
(tests/test_engine_pool.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from generator.engines.base import Engine


def pool_key(options) -> tuple:
    """What makes two uses share an engine: the engine kind, the model (however spelled) and the servers."""
    from generator.models import display_name

    return options.engine_name(), display_name(options.model), tuple(options.base_urls)


@dataclass
class _Built:
    engine: Engine
    settings: dict[str, Any]


@dataclass
class EnginePool:
    """One engine per ``pool_key``, built on first use with the settings of every use planned for it."""

    built: dict[tuple, _Built] = field(default_factory=dict)
    planned: dict[tuple, dict[str, Any]] = field(default_factory=dict)

    def plan(self, uses: Iterable) -> EnginePool:
        """Declare the ``EngineOptions`` that will be asked for, so that an engine they share is built once,
        with the settings of them all."""
        for options in uses:
            self.planned.setdefault(pool_key(options), {}).update(options.engine_kwargs())
        return self

    def get(self, options, seed: int | None = None) -> Engine:
        """The engine of ``options``: the one built for its key, else a new one (``seed``: the engine-wide
        sampling seed of the first use, EngineOptions.build)."""
        key = pool_key(options)
        wanted = {**self.planned.get(key, {}), **options.engine_kwargs()}
        entry = self.built.get(key)
        if entry is not None and wanted.items() <= entry.settings.items():
            return entry.engine
        if entry is not None:  # built for another use without these settings: rebuilt with both
            wanted = {**entry.settings, **wanted}
            self.built.pop(key).engine.close()
        engine = options.build(seed=seed, **wanted)
        self.built[key] = _Built(engine, wanted)
        return engine

    def release(self, keep: Iterable = ()) -> None:
        """Close every built engine that none of the ``EngineOptions`` in ``keep`` uses."""
        kept = {pool_key(options) for options in keep}
        for key in [k for k in self.built if k not in kept]:
            self.built.pop(key).engine.close()

    def close(self) -> None:
        """Close every built engine (before a training stage, and at the end)."""
        self.release()

    @property
    def engines(self) -> dict[tuple, Engine]:
        """The engines alive, by key."""
        return {key: entry.engine for key, entry in self.built.items()}
