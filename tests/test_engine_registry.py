"""Where engines come from (generator/engines/__init__.py): the registry, ``rlaif.engines`` entry points and
``module:Class``, each checked to be an ``EngineBase`` class before anything is called."""

from __future__ import annotations

import sys
import textwrap
import types

import pytest
from pydantic import ValidationError

from generator.engines import ENGINES, EngineBase, EngineNameError, engine_class, make_engine
from generator.engines.options import EngineOptions

USER_ENGINE = textwrap.dedent('''
    from generator.engines.fake import FakeEngine


    class MyEngine(FakeEngine):
        name = "mine"
''')


def test_every_built_in_engine_is_an_engine_base_class():
    for name in ENGINES:
        cls = engine_class(name)
        assert isinstance(cls, type) and issubclass(cls, EngineBase), name


@pytest.fixture
def tripwire(monkeypatch):
    """A module whose every attribute records that it was called."""
    calls = []
    module = types.ModuleType("tripwire_mod")

    def function(*args, **kwargs):
        calls.append(("function", args, kwargs))

    class NotAnEngine:
        def __init__(self, *args, **kwargs):
            calls.append(("class", args, kwargs))

    class HalfEngine(EngineBase):
        def __init__(self, *args, **kwargs):
            calls.append(("half", args, kwargs))

        def close(self):
            pass

    module.function, module.NotAnEngine, module.HalfEngine = function, NotAnEngine, HalfEngine
    monkeypatch.setitem(sys.modules, "tripwire_mod", module)
    return calls


@pytest.mark.parametrize(("name", "message"), [
    ("os:system", "is not a class"),
    ("subprocess:Popen", "not derived from generator.engines.base.EngineBase"),
    ("builtins:print", "is not a class"),
    ("tripwire_mod:function", "is not a class"),
    ("tripwire_mod:NotAnEngine", "not derived from generator.engines.base.EngineBase"),
    ("tripwire_mod:HalfEngine", "does not implement count_tokens, generate, score_choices"),
    ("tripwire_mod:Missing", "has no attribute 'Missing'"),
    ("no_such_module_xyz:Engine", "cannot be imported"),
    ("bogus", "unknown engine 'bogus'"),
    ("os:", "is not of the form module:Class"),
    ("os:system; rm -rf /", "is not of the form module:Class"),
])
def test_a_name_that_is_no_engine_class_is_refused_before_anything_is_called(name, message, tripwire):
    with pytest.raises(EngineNameError, match=message.replace("(", r"\(")):
        make_engine(name, "fake-model")
    with pytest.raises(ValidationError, match=message.replace("(", r"\(")):
        EngineOptions(engine=name)
    assert tripwire == []


def test_a_user_engine_class_is_built(tmp_path, monkeypatch):
    (tmp_path / "user_engine_mod.py").write_text(USER_ENGINE)
    monkeypatch.syspath_prepend(str(tmp_path))
    engine = make_engine("user_engine_mod:MyEngine", "m")
    assert type(engine).__name__ == "MyEngine" and engine.name == "mine"
    assert EngineOptions(engine="user_engine_mod:MyEngine").engine_name() == "user_engine_mod:MyEngine"


def test_an_entry_point_names_an_engine(tmp_path, monkeypatch):
    """A distribution on sys.path declaring ``[rlaif.engines] mine = user_engine_ep:MyEngine``."""
    (tmp_path / "user_engine_ep.py").write_text(USER_ENGINE)
    info = tmp_path / "user_engine_ep-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: user-engine-ep\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[rlaif.engines]\nmine = user_engine_ep:MyEngine\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert engine_class("mine").__name__ == "MyEngine"
    assert make_engine("mine", "m").name == "mine"


def test_an_entry_point_to_a_non_engine_is_refused(tmp_path, monkeypatch):
    info = tmp_path / "bad_ep-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bad-ep\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[rlaif.engines]\nshell = os:system\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(EngineNameError, match="is not a class"):
        make_engine("shell", "echo pwned")


def test_no_model_guard_stops_make_engine_before_the_class_is_called(monkeypatch, tmp_path):
    monkeypatch.setenv("RLAIF_NO_MODEL", "1")
    with pytest.raises(RuntimeError, match="RLAIF_NO_MODEL is set"):
        make_engine("fake", "m")
    from generator.models import prepare

    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path / "cache"))  # nothing converted there yet
    with pytest.raises(RuntimeError, match="RLAIF_NO_MODEL is set"):
        prepare("smollm2-135m")
    assert not (tmp_path / "cache" / "models" / "smollm2-135m").exists()
