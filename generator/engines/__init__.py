"""Inference engines. ``make_engine(name, model, **kw)`` builds one from ``ENGINES``.

Where an engine comes from, in order:

1. ``ENGINES``, the built-in registry below;
2. an installed entry point of the group ``rlaif.engines`` (a package declares
   ``[project.entry-points."rlaif.engines"] myengine = "mypkg.engine:MyEngine"``);
3. ``module:Class`` for user code, e.g. ``--engine mypkg.engine:MyEngine``.

Whatever the source, ``engine_class`` looks the name up with the one plugin lookup (plumbing/plugins.py: a
user's module is not imported to refuse a name its source does not mention) and checks that it is a CLASS
derived from ``generator.engines.base.EngineBase`` that implements its abstract methods, before anything is
called: ``--engine os:system`` or ``--engine subprocess:Popen`` is refused with one line and
nothing runs (tests/test_engine_registry.py, tests/bad_inputs/cases.py). Importing the module named in
``module:Class`` runs its top-level code, as any ``import`` does: name only modules you trust.
Anything else raises ``EngineNameError`` and lists the known names. Implementations import
lazily: vLLM is heavy and absent on some machines, and the transformers engine is the fallback there.

``RLAIF_NO_MODEL=1`` makes ``make_engine`` (and the embedded model's conversion,
``generator.models.prepare``) raise instead of building anything: the bad-input corpus
(tests/test_bad_inputs.py) sets it to prove that a refused command never reaches a model.
"""

from __future__ import annotations

import inspect
import os

from generator.engines.base import (
    ChoiceScores,
    Completion,
    Engine,
    EngineBase,
    EngineError,
    Prompt,
    Sampling,
    option_logprobs,
)
from plumbing.plugins import PluginKind, lookup

ENGINES: dict[str, str] = {
    "vllm": "generator.engines.vllm_engine:VLLMEngine",
    "openai": "generator.engines.openai_engine:OpenAIEngine",
    "transformers": "generator.engines.hf_engine:TransformersEngine",
    "fake": "generator.engines.fake:FakeEngine",
    "ray": "generator.engines.ray_replicas:RayReplicasEngine",
}
ENTRY_POINT_GROUP = "rlaif.engines"
NO_MODEL_ENV = "RLAIF_NO_MODEL"

__all__ = ["ENGINES", "ENTRY_POINT_GROUP", "ChoiceScores", "Completion", "Engine", "EngineBase", "EngineError",
           "EngineNameError", "Prompt", "Sampling", "check_engine_name", "engine_class", "make_engine",
           "no_model_guard", "option_logprobs"]


class EngineNameError(ValueError):
    """``--engine`` names no usable engine class; the message says which names work."""


def _check_engine_class(name: str, obj) -> None:
    """``obj`` is a class derived from ``EngineBase`` with nothing abstract left (it is not called)."""
    if not inspect.isclass(obj):
        raise EngineNameError(f"engine {name!r} is not a class (it is a {type(obj).__name__}); an engine is a "
                              f"class derived from generator.engines.base.EngineBase")
    if not issubclass(obj, EngineBase):
        raise EngineNameError(f"engine {name!r} is a class not derived from generator.engines.base.EngineBase; "
                              f"derive your engine from it")
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
        raise EngineNameError(f"engine {name!r} does not implement {missing} (abstract in "
                              f"generator.engines.base.EngineBase); implement them")


KIND = PluginKind("engine", ENGINES, "module:Class", "a class derived from generator.engines.base.EngineBase",
                  group=ENTRY_POINT_GROUP, error=EngineNameError, check=_check_engine_class)


def check_engine_name(name: str) -> None:
    """Refuse a name that cannot be an engine, before any model or file is touched. Built-in names
    are checked without importing their (heavy) modules; anything else is resolved and checked fully."""
    if name not in ENGINES:
        engine_class(name)


def engine_class(name: str) -> type[EngineBase]:
    """The engine class ``name`` stands for (plumbing/plugins.py), checked (a class, derived from
    ``EngineBase``, nothing abstract left) without being called."""
    return lookup(name, KIND)


def no_model_guard(what: str) -> None:
    """Raise (a plain RuntimeError, shown with its traceback) when ``RLAIF_NO_MODEL`` is set."""
    if os.environ.get(NO_MODEL_ENV):
        raise RuntimeError(f"{NO_MODEL_ENV} is set, but {what} would be built here")


def make_engine(name: str, model: str | None = None, **kwargs) -> Engine:
    """Build engine ``name`` for ``model`` (an embedded name, a folder or a Hub id)."""
    cls = engine_class(name)
    no_model_guard(f"engine {name!r} for model {model!r}")
    return cls(model, **kwargs) if model is not None else cls(**kwargs)
