"""What the built-in stages of ``rlaif run`` do, each through its command's own config and function: the options
it takes from the pipeline recipe, its config, the inputs read before the loop writes anything, and its run. The
stage registry (pipeline/stages.py ``STAGES``) declares which of these each stage uses; ``ctx`` is its
``Context`` (the recipe, the engine pool, the run's constitutions)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# --- the options each stage's command takes ------------------------------------------------------------------

def const_path(recipe) -> str:
    from constitution import path_or_default

    return str(path_or_default(recipe.constitution))


def engine_fields(recipe, model: str | None = None) -> dict[str, Any]:
    """EngineOptions' fields (plain data: the model may be one a later stage writes)."""
    return {"model": model or recipe.model, **recipe.engine.model_dump()}


def generate_options(recipe, name: str) -> dict:
    return {"prompts": str(recipe.prompts_file()), "out": str(recipe.path(name)),
            "engine": engine_fields(recipe), **recipe.options(name)}


def revise_options(recipe, name: str) -> dict:
    return {"prompts": str(recipe.prompts_file()), "out": str(recipe.path(name)),
            "engine": engine_fields(recipe), "constitution": const_path(recipe), **recipe.options(name)}


def judge_options(recipe, name: str) -> dict:
    return {"input": str(recipe.path("generate")), "out": str(recipe.path(name)),
            "constitution": const_path(recipe), "model": recipe.model, **recipe.options(name)}


def publish_options(recipe, name: str) -> dict:
    opts = dict(recipe.options(name))
    dry = opts.pop("dry_run", True)  # dry-run unless the recipe says dry_run: false
    return {"run_dir": str(recipe.path("judge")), "dry_run": str(recipe.path(name)) if dry else None,
            "constitution": const_path(recipe), **opts}


def ppo_options(recipe, raw: dict) -> dict:
    return {"reward_model": str(recipe.path("reward")), **raw}


def grpo_options(recipe, raw: dict) -> dict:
    if "judge" in raw.get("reward_funcs", []):  # the loop's constitution, unless it names one
        return {**raw, "judge": {"constitution": const_path(recipe), **(raw.get("judge") or {})}}
    return raw


# --- configs -------------------------------------------------------------------------------------------------

def _attr(target: str) -> Any:
    """What a ``module:attr`` string names, imported when a stage first needs it."""
    import importlib

    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def model_config(cls: str) -> Callable[[Any, dict, bool], Any]:
    """A config that is the pydantic class ``cls`` (``module:Class``) validating the options."""
    def config(recipe, raw: dict, checking: bool):
        return _attr(cls).model_validate(raw)
    return config


def eval_config(recipe, raw: dict, checking: bool):
    from evaluation.evaluate import EvalConfig

    if checking:  # the policy is a model an earlier stage writes: checked as the start model
        raw = {**raw, "policy": {**raw["policy"], "model": recipe.model}}
    return EvalConfig.model_validate(raw)


def publish_config(recipe, raw: dict, checking: bool):
    from publish.upload import PublishConfig, validate_repo_id

    config = PublishConfig.model_validate({"repo_id": "rlaif/preview", **raw})
    validate_repo_id(config.repo_id)
    return config


# --- inputs read before the loop writes anything -------------------------------------------------------------

def _read_templates(names, folder) -> None:
    """Each template as the stage will read it (a user's folder shadows the built-ins), named when it is not text."""
    from prompts import template_source

    for name in names:
        try:
            template_source(name, folder)
        except UnicodeDecodeError:
            raise ValueError(f"templates {folder}: {name} is not UTF-8 text; save it as UTF-8") from None


def generate_inputs(config, ctx) -> None:
    from generator.generate import read_items

    read_items(config)


def revise_inputs(config, ctx) -> None:
    from generator.revise import TEMPLATES

    generate_inputs(config, ctx)
    ctx.constitutions.load(config.constitution)
    _read_templates(TEMPLATES, config.templates)


def judge_inputs(judge, ctx) -> None:
    from constitution import path_or_default
    from judge.scoring import templates_used

    ctx.constitutions.load(path_or_default(judge.constitution))
    _read_templates(templates_used(judge), judge.templates)


def eval_inputs(config, ctx) -> None:
    from evaluation.inputs import read_input

    judge_inputs(config.judge, ctx)
    read_input(config)


def publish_inputs(config, ctx) -> None:
    from constitution import path_or_default

    ctx.constitutions.load(path_or_default(config.constitution))


def training_inputs(config, ctx) -> None:
    """The method's own data (align's data reader), unless a stage of this loop writes it: that one is read by the
    stage itself. PPO's reader reads the prompts alone: its reward model is the loop's reward stage."""
    from align import read_data

    if not Path(config.data.path).resolve().is_relative_to(Path(ctx.recipe.root).resolve()):
        read_data(config)


# --- running -------------------------------------------------------------------------------------------------

def engine_run(run_fn: str) -> Callable[[Any, Any], str]:
    """generate and revise: the stage's function on an engine of the shared pool."""
    def run(config, ctx) -> str:
        config = config.model_copy(update={"overwrite": ctx.overwrite})
        counts = _attr(run_fn)(config, engine=ctx.pool.get(config.engine, seed=config.seed))
        return f"{counts.get('train', 0)} rows -> {config.out}"
    return run


def stage_engine(config) -> list:
    """generate and revise: the engine they ask the pool for."""
    return [config.engine]


def judge_engine(config) -> list:
    from judge.build import engine_options

    return [engine_options(config)]


def judge_run(config, ctx) -> str:
    from constitution import path_or_default
    from judge.build import engine_options, run_judge

    config = config.model_copy(update={"overwrite": ctx.overwrite})
    summary = run_judge(config, engine=ctx.pool.get(engine_options(config), seed=config.seed),
                        constitution=ctx.constitutions.load(path_or_default(config.constitution)))
    return summary.line()


def training_run(config, ctx) -> str:
    from align import run

    ctx.pool.close()  # training takes the cores (and a GPU's memory) the engines held
    # TRL prints each step's log dict with print(): to descriptor 1, which `rlaif run` sends to the run's
    # log file (plumbing/capture.py), not to the console that shows the stages' lines
    with contextlib.redirect_stdout(sys.__stdout__):
        metrics = run(config, overwrite=True)  # an align output is replaced only by one of its own method
    return f"{metrics['global_step']} steps -> {config.output_dir}"


def eval_run(config, ctx) -> str:
    from constitution import path_or_default
    from evaluation.evaluate import evaluate

    config = config.model_copy(update={"overwrite": ctx.overwrite})
    result = evaluate(config, constitution=ctx.constitutions.load(path_or_default(config.judge.constitution)))
    value = (result.get("win_rate") or {}).get("value")
    return f"win-rate {'n/a' if value is None else f'{value:.3f}'} -> {config.out}"


def publish_run(config, ctx) -> str:  # its dry run's folder was emptied by the loop (``cleared``)
    from publish.upload import run_publish

    return f"published: {run_publish(config)}"
