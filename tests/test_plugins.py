"""The one plugin lookup (plumbing/plugins.py): built-in names, entry points and ``module:name``, one error line
format for every kind, and no import of a user's module to refuse a name its source does not mention."""

from __future__ import annotations

import re
import sys

import pytest

from plumbing.plugins import PluginKind, lookup

LOUD = 'from pathlib import Path\n\nPath(__file__).with_name("ran-" + __name__).write_text("ran")\n\n\nclass Thing:\n    pass\n'


@pytest.fixture
def loud(tmp_path, monkeypatch):
    """A package ``loudpkg`` (its __init__ and loudpkg/mod.py leave a file when imported) on sys.path."""
    (tmp_path / "loudpkg").mkdir()
    (tmp_path / "loudpkg" / "__init__.py").write_text(LOUD)
    (tmp_path / "loudpkg" / "mod.py").write_text(LOUD)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("loudpkg", "loudpkg.mod"):
        sys.modules.pop(name, None)


def _ran(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob("ran-*"))


KIND = PluginKind("widget", {"plain": len, "lazy": "json:dumps"}, "module:function", "any callable",
                  error=LookupError)


def test_builtin_names_entry_points_and_module_names():
    import json

    assert lookup("plain", KIND) is len
    assert lookup("lazy", KIND) is json.dumps
    assert lookup("os.path:join", KIND) is __import__("os").path.join


def test_a_module_name_is_refused_without_importing_the_module_or_its_package(loud):
    from generator.engines import EngineNameError, engine_class

    for name in ("loudpkg.mod:Missing", "loudpkg.nomod:Thing"):
        with pytest.raises(EngineNameError, match="has no attribute 'Missing'|no such module on the Python path"):
            engine_class(name)
    assert _ran(loud) == [] and not {"loudpkg", "loudpkg.mod"} & set(sys.modules)
    with pytest.raises(EngineNameError, match="not derived from generator.engines.base.EngineBase"):
        engine_class("loudpkg.mod:Thing")  # named in its source: imported, then checked
    assert _ran(loud) == ["ran-loudpkg", "ran-loudpkg.mod"]


@pytest.mark.parametrize("name", ["nope", "x:", "no_such_module_xyz:f", "json:nope", "os:getcwd; rm"])
def test_every_refusal_is_one_line_saying_what_where_and_how(name):
    from align.rewards import get_reward
    from generator.engines import EngineNameError, engine_class

    for kind, find, error in (("engine", engine_class, EngineNameError), ("reward", get_reward, KeyError),
                              ("widget", lambda n: lookup(n, KIND), LookupError)):
        with pytest.raises(error) as info:
            find(name)
        line = info.value.args[0]
        assert "\n" not in line
        assert re.fullmatch(rf"(unknown {kind} '{re.escape(name)}'|{kind} '{re.escape(name)}'(:| is) .+); .+", line), line
