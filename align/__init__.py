"""Alignment: SFT, reward models, DPO and GRPO on the runs the generator and judge write (TRL underneath), and
PPO against a reward model on our own trainer (align/ppo/).

``ALIGN_METHODS`` is the one registry of training methods: each name maps to a ``Method`` that says which
recipe class it takes, which function trains, its ``rlaif align <name>`` help line and which function reads its
training data. The ``rlaif align`` commands (rlaif/align.py), ``build_recipe`` and the pipeline's training stages
(pipeline/stages.py) are all made from it, so a new method is one entry here (and one entry in the pipeline's
``TRAINING`` to run it in ``rlaif run``). The recipe classes live in ``align/config.py`` (PPO's in
``align/ppo/config.py``); a trainer may also be a ``module:function`` of user code taking a recipe.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plumbing.recipes import RecipeError, merge, parse_set, read_yaml


@dataclass(frozen=True)
class Method:
    """One training method. ``recipe``, ``train`` and ``data`` are objects or ``module:attr`` strings, imported
    only when used (so listing the methods, as ``rlaif --help`` does, loads no trainer)."""

    recipe: type | str  # the pydantic recipe class (its ClassVar ``method`` is the registry's name)
    train: Callable | str  # recipe -> metrics.json's content; writes into recipe.work_dir
    help: str  # the help line of `rlaif align <name>`
    data: Callable | str  # recipe -> align.data.AlignData: reads and checks the training data, loads no model
    flags: tuple[str, ...] = ()  # the `rlaif align` options beyond the common ones: reward, prompts, reward_model

    def recipe_class(self) -> type:
        return _load(self.recipe)

    def trainer(self) -> Callable[[Any], dict]:
        return _load(self.train)

    def data_reader(self) -> Callable[[Any], Any]:
        return _load(self.data)


ALIGN_METHODS: dict[str, Method] = {
    "sft": Method("align.config:SFTRecipe", "align.sft:train", data="align.data:recipe_data",
                  help="Supervised fine-tuning on a `rlaif revise` run (messages column)."),
    "reward": Method("align.config:RewardRecipe", "align.reward:train", data="align.data:recipe_data",
                     help="Reward model (sequence classifier, Bradley-Terry loss) on a `rlaif judge` run."),
    "dpo": Method("align.config:DPORecipe", "align.dpo:train", data="align.data:recipe_data",
                  help="DPO on a `rlaif judge` run (TRL loss types; soft_labels = cDPO with the judge's p_chosen)."),
    "grpo": Method("align.config:GRPORecipe", "align.grpo:train", data="align.data:load_grpo_data",
                   flags=("reward",), help="GRPO on prompts (`rlaif data gsm8k|mbpp` run or a file) with verifiable "
                                           "rewards (--reward)."),
    "ppo": Method("align.ppo.config:PPORecipe", "align.ppo:train", data="align.ppo.data:load_prompts",
                  flags=("reward", "prompts", "reward_model"),
                  help="PPO on prompts (any file `rlaif generate` reads, or a run) against a reward model "
                       "(--reward-model) and/or --reward functions."),
}


def _load(target: Any) -> Any:
    """``target`` itself, or the attribute a ``module:attr`` string names."""
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def method(name: str) -> Method:
    """The registry's entry for ``name``; an unknown name is one line listing the known ones."""
    if name not in ALIGN_METHODS:
        raise RecipeError(f"unknown align method {name!r}; known: {', '.join(ALIGN_METHODS)}")
    return ALIGN_METHODS[name]


def get_method(name: str) -> Callable[[Any], dict]:
    """The trainer of ``name`` (a key of ALIGN_METHODS, or ``module:function``)."""
    if name in ALIGN_METHODS:
        return ALIGN_METHODS[name].trainer()
    module, sep, func = name.partition(":")
    if not sep:
        raise RecipeError(f"unknown align method {name!r}; known: {', '.join(ALIGN_METHODS)} (or module:function)")
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as e:
        raise RecipeError(f"align method {name!r}: cannot import {name} ({e})") from None


def read_data(recipe):
    """The recipe's training data, read and checked the way its trainer reads it, before any model loads."""
    return method(recipe.method).data_reader()(recipe)


def build_recipe(name: str, raw: dict[str, Any], source: str = "recipe"):
    """Validate a raw mapping as method ``name``'s recipe; errors become one RecipeError line."""
    from pydantic import ValidationError

    from align.data import DataSource
    from plumbing.errors import first_error, validation_line

    cls = method(name).recipe_class()
    raw = dict(raw)
    declared = raw.pop("method", name)
    if declared != name:
        raise RecipeError(f"{source} is a {declared!r} recipe; run `rlaif align {declared}` or change method:")
    try:
        recipe = cls.model_validate(raw)
    except ValidationError as e:
        err, message = first_error(e), None
        if err.type == "extra_forbidden":
            known = ", ".join(cls.model_fields if len(err.loc) == 1 else DataSource.model_fields)
            message = f"unknown key (known: {known}; TRL options go under trl:)"
        raise RecipeError(validation_line(e, source, message=message)) from None
    recipe.check_trl_keys()
    return recipe


def load_recipe(name: str, config: str | Path | None = None, overrides: list[str] | None = None,
                quick: dict[str, Any] | None = None):
    """A recipe from ``--config`` (optional), then the quick-form flags, then ``--set`` overrides."""
    raw = read_yaml(config) if config else {}
    raw = merge(raw, {k: v for k, v in (quick or {}).items() if v is not None})
    raw = merge(raw, parse_set(overrides or []))
    return build_recipe(name, raw, source=str(config) if config else "recipe")


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
