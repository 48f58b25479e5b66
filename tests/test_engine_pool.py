"""The one engine pool (generator/engines/pool.py): one engine per (engine kind, model, servers), carrying the
build settings of every use of it, on FakeEngine with every build recorded."""

from __future__ import annotations

from typing import Any

import pytest

from generator.engines.fake import FakeEngine
from generator.engines.options import EngineOptions
from generator.engines.pool import EnginePool, pool_key


class Closing(FakeEngine):
    def __init__(self, model: str = "fake-model", **kwargs: Any):
        super().__init__(model, **kwargs)
        self.settings, self.closed = kwargs, False

    def close(self) -> None:
        self.closed = True


class Blocky(EngineOptions):
    """A use that adds a build setting, as the judge's options do (judge/config.py JudgeEngineOptions)."""

    def engine_kwargs(self) -> dict[str, Any]:
        return {"block_size": 32}


@pytest.fixture
def builds(monkeypatch) -> list[Closing]:
    import generator.engines.options as options

    made: list[Closing] = []

    def make_engine(name, model=None, **kwargs):
        made.append(Closing(model, **kwargs))
        return made[-1]

    monkeypatch.setattr(options, "make_engine", make_engine)
    return made


def test_uses_of_one_model_share_its_engine_and_release_closes_the_rest(builds):
    a, a_again = EngineOptions(model="m", engine="fake"), EngineOptions(model="m", engine="fake", batch_size=4)
    b = EngineOptions(model="other", engine="fake")
    pool = EnginePool()
    assert pool.get(a, seed=7) is pool.get(a_again) and len(builds) == 1
    assert builds[0].settings == {"seed": 7}  # the first use's seed
    pool.get(b)
    assert pool_key(a) == pool_key(a_again) != pool_key(b) and len(pool.engines) == 2
    pool.release(keep=[a_again])
    assert [e.closed for e in builds] == [False, True] and list(pool.engines) == [pool_key(a)]
    pool.close()
    assert all(e.closed for e in builds) and not pool.engines


def test_a_planned_use_gives_the_shared_engine_its_settings_up_front(builds):
    plain, judge = EngineOptions(model="m", engine="fake"), Blocky(model="m", engine="fake")
    pool = EnginePool().plan([plain, judge])
    first = pool.get(plain)
    assert pool.get(judge) is first and len(builds) == 1  # one engine, built once
    assert first.settings == {"block_size": 32}


def test_a_use_the_built_engine_lacks_settings_for_has_it_rebuilt_with_them(builds):
    plain, judge = EngineOptions(model="m", engine="fake"), Blocky(model="m", engine="fake")
    pool = EnginePool()
    first = pool.get(plain, seed=1)
    second = pool.get(judge, seed=1)
    assert second is not first and first.closed  # never two engines of one model at once
    assert second.settings == {"seed": 1, "block_size": 32}
    assert pool.get(plain) is second and len(builds) == 2  # the rebuilt engine serves both uses
