"""Inference engines. ``make_engine(name, model, **kw)`` builds one from ``ENGINES``.

A name not in ``ENGINES`` may be ``module:Class`` for user code; anything else raises and
lists the known names. Implementations import lazily: vLLM is heavy and absent
on some machines, and the transformers engine is the fallback there.
"""

from __future__ import annotations

import importlib

from generator.engines.base import (
    ChoiceScores,
    Completion,
    Engine,
    EngineError,
    Prompt,
    Sampling,
    option_logprobs,
)

ENGINES: dict[str, str] = {
    "vllm": "generator.engines.vllm_engine:VLLMEngine",
    "openai": "generator.engines.openai_engine:OpenAIEngine",
    "transformers": "generator.engines.hf_engine:TransformersEngine",
    "fake": "generator.engines.fake:FakeEngine",
}

__all__ = ["ENGINES", "ChoiceScores", "Completion", "Engine", "EngineError", "Prompt", "Sampling",
           "make_engine", "option_logprobs"]


def _load(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def make_engine(name: str, model: str | None = None, **kwargs) -> Engine:
    """Build engine ``name`` for ``model`` (an embedded name, a folder or a Hub id)."""
    if name in ENGINES:
        cls = _load(ENGINES[name])
    elif ":" in name:
        try:
            cls = _load(name)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"engine {name!r} cannot be imported: {e}") from None
    else:
        raise ValueError(f"unknown engine {name!r}; known: {', '.join(ENGINES)} (or module:Class)")
    return cls(model, **kwargs) if model is not None else cls(**kwargs)
