"""Alignment: SFT, reward models, DPO and GRPO on the runs the generator and judge write (TRL underneath).

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
    "grpo": "align.grpo:train",
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


def run(recipe, overwrite: bool = False) -> dict:
    """Train with ``recipe`` (its method picks the trainer); returns the metrics.

    ``recipe.output_dir`` is checked before the data or the model is read, the trainer writes into a
    temp folder, and that folder is renamed to output_dir only when training ends well
    (align/output.py; ``overwrite`` replaces an earlier output of the same method)."""
    import os

    from align.launch import WORK_DIR, in_child, writes_for_parent
    from align.output import check_out, publish, write_manifest

    if recipe.quiet:
        quiet_progress()
    train = get_method(recipe.method)
    if writes_for_parent():  # started by align/launch.py, which checked output_dir and renames at the end
        return train(recipe.writing_to(os.environ[WORK_DIR]))
    if in_child():
        check_out(recipe, overwrite)  # started by accelerate/torchrun directly: every rank writes output_dir
        metrics = train(recipe)
        if metrics.get("method"):  # rank 0
            write_manifest(recipe.output_dir, recipe)
        return metrics
    mode = check_out(recipe, overwrite)
    with publish(recipe, mode) as tmp:
        return train(recipe.writing_to(tmp))


def quiet_progress() -> None:
    """No progress bars from TRL, transformers or datasets (logs stay)."""
    import os

    import datasets
    import transformers

    os.environ["TQDM_DISABLE"] = "1"
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
