"""Alignment: SFT, reward models and DPO on the runs the generator and judge write (TRL underneath).

``ALIGN_METHODS`` maps a method name to its ``module:function`` trainer; a name not in it may be
a ``module:function`` of user code taking a recipe. Recipes live in ``align/config.py``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

ALIGN_METHODS: dict[str, str] = {
    "sft": "align.sft:train",
    "reward": "align.reward:train",
    "dpo": "align.dpo:train",
}


def get_method(name: str) -> Callable[[Any], dict]:
    """The trainer of ``name`` (a key of ALIGN_METHODS, or ``module:function``)."""
    from align.config import RecipeError

    target = ALIGN_METHODS.get(name, name)
    module, sep, func = target.partition(":")
    if not sep:
        raise RecipeError(f"unknown align method {name!r}; known: {', '.join(ALIGN_METHODS)} "
                          f"(or module:function)")
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as e:
        raise RecipeError(f"align method {name!r}: cannot import {target} ({e})") from None


def run(recipe) -> dict:
    """Train with ``recipe`` (its method picks the trainer); returns the metrics."""
    if recipe.quiet:
        quiet_progress()
    return get_method(recipe.method)(recipe)


def quiet_progress() -> None:
    """No progress bars from TRL, transformers or datasets (logs stay)."""
    import os

    import datasets
    import transformers

    os.environ["TQDM_DISABLE"] = "1"
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
