"""align/rewards/__init__.py: a reward is a registered name, an entry point, or a module:function with the
reward signature, checked without calling it; a user's module is not imported to refuse a name it lacks."""

from __future__ import annotations

import sys

import pytest

from align.rewards import REWARDS, check_reward_names, get_reward

# A user's module with top-level code that leaves a marker when it runs (an import).
LOUD = '''\
from pathlib import Path

Path(__file__).with_name("imported-" + __name__).write_text("ran")


def score(text):
    return [0.0]


def good(prompts, completions, **columns):
    return [1.0 for _ in completions]


helper = score
'''


@pytest.fixture
def user_modules(tmp_path, monkeypatch):
    """``tmp_path`` on sys.path with loud.py and a package pkg/ (its __init__ and pkg/sub.py loud too)."""
    (tmp_path / "loud.py").write_text(LOUD)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text(LOUD)
    (tmp_path / "pkg" / "sub.py").write_text(LOUD)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("loud", "pkg", "pkg.sub", "myrewards_mod"):
        sys.modules.pop(name, None)


def _imported(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob("imported-*"))


@pytest.mark.parametrize("name", ["loud:nope", "pkg.sub:nope", "pkg.missing:good", "pkg:nope"])
def test_a_name_the_module_does_not_define_is_refused_without_importing_it(user_modules, name):
    with pytest.raises(KeyError, match="has no attribute|no such module"):
        get_reward(name)
    assert _imported(user_modules) == []  # neither the module nor its package ran
    assert not {"loud", "pkg", "pkg.sub"} & set(sys.modules)


def test_a_def_without_the_reward_signature_is_refused_without_importing_it(user_modules):
    with pytest.raises(TypeError, match=r"takes \(text\), not a reward's \(prompts, completions, \*\*columns\)"):
        get_reward("loud:score")
    assert _imported(user_modules) == []


def test_a_reward_function_is_imported_and_returned(user_modules):
    fn = get_reward("loud:good")
    assert fn(["p"], ["a", "b"]) == [1.0, 1.0]
    assert _imported(user_modules) == ["imported-loud"]


def test_a_name_bound_by_assignment_is_checked_after_import(user_modules):
    with pytest.raises(TypeError, match=r"takes \(text\)"):  # `helper = score`: only importing tells what it is
        get_reward("loud:helper")
    assert _imported(user_modules) == ["imported-loud"]


@pytest.mark.parametrize(("name", "message"), [
    ("os:system", r"takes \(command\), not a reward's"),  # refused by its signature, never called
    ("os.path:join", r"takes \(a, \*p\)"),
    ("subprocess:Popen", "is a class, not a function"),
    ("align.rewards:REWARDS", "not callable"),
    ("align.rewards.combine:combine", r"takes \(reward_funcs, weights\)"),
])
def test_callables_without_the_reward_signature_are_refused(name, message):
    with pytest.raises(TypeError, match=message):
        get_reward(name)


def test_a_reward_from_an_entry_point(user_modules):
    dist = user_modules / "myrewards-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myrewards\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[rlaif.rewards]\nmine = myrewards_mod:mine\nbad = myrewards_mod:bad\n")
    (user_modules / "myrewards_mod.py").write_text(
        "def mine(prompts, completions, **kw):\n    return [0.5] * len(completions)\n\n\ndef bad(x):\n    return x\n")
    assert get_reward("mine")(None, ["a"]) == [0.5]
    with pytest.raises(TypeError, match=r"reward 'bad' takes \(x\)"):
        get_reward("bad")


def test_registered_names_and_the_recipe_check():
    assert all(get_reward(name) is fn for name, fn in REWARDS.items())
    assert check_reward_names(["gsm8k", "judge"]) == ["gsm8k", "judge"]
    with pytest.raises(ValueError, match="takes \\(command\\)"):
        check_reward_names(["gsm8k", "os:system"])
    with pytest.raises(KeyError, match="not of the form module:function"):
        get_reward("not a module:f")
