"""Alignment: SFT, reward models, DPO and GRPO on the runs the generator and judge write (TRL underneath), and
PPO against a reward model on our own trainer (align/ppo/).

``ALIGN_METHODS`` maps a method name to its ``module:function`` trainer; a name not in it may be
a ``module:function`` of user code taking a recipe. Recipes live in ``align/config.py``
(PPO's in ``align/ppo/config.py``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

ALIGN_METHODS: dict[str, str] = {
    "sft": "align.sft:train",
    "reward": "align.reward:train",
    "dpo": "align.dpo:train",
    "grpo": "align.grpo:train",
    "ppo": "align.ppo:train",
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
    with quiet_progress(recipe.quiet):
        return _run(recipe, overwrite)


def _run(recipe, overwrite: bool) -> dict:
    import os

    from align.launch import WORK_DIR, in_child, writes_for_parent
    from align.output import check_out, publish, write_manifest

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


@contextmanager
def quiet_progress(quiet: bool = True) -> Iterator[None]:
    """No progress bars from TRL, transformers or datasets while training (logs stay); the process's
    environment and the libraries' settings are restored afterwards (a caller's later subprocesses
    must not inherit TQDM_DISABLE)."""
    import os

    if not quiet:
        yield
        return
    import datasets
    import transformers

    before = os.environ.get("TQDM_DISABLE")
    bars = datasets.is_progress_bar_enabled(), transformers.utils.logging.is_progress_bar_enabled()
    os.environ["TQDM_DISABLE"] = "1"
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = before
        if bars[0]:
            datasets.enable_progress_bars()
        if bars[1]:
            transformers.utils.logging.enable_progress_bar()
