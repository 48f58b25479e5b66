"""The stage registry of ``rlaif run`` (pipeline/loop.py): ``STAGES`` declares each stage once, in the loop's
order, and everything else about the stages is read from it: the recipe's stage keys and their order, the stages
each reads (``upstream``) and needs listed (``needs``), the trained policy eval compares (``role``), each
stage's fingerprinted options, its config, the inputs read before anything is written, its run and its
metrics.json.

A stage builds its command's own config from the pipeline recipe and calls the function its command calls, so the
stage commands stay the single implementation. The training stages are align's methods (align/__init__.py
``ALIGN_METHODS``: recipe class, trainer, data reader) with the pipeline's side in a ``Training`` entry: which
stage's output is its data, which other stages it reads, and its role (the base the policy starts from, the
policy eval compares, or another model such as a reward model). A new training method is an align entry plus a
``Training`` entry here; a new stage is a ``Stage`` entry (tests/test_stage_registry.py registers one of each).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from align import ALIGN_METHODS, build_recipe
from pipeline import builtin as b
from pipeline import metrics as m
from pipeline.constitutions import Constitutions
from pipeline.errors import PipelineError
from pipeline.hub import check_hub

PROMPTS = "<prompts>"  # a Training's ``data``: the recipe's prompt file rather than a stage's output


@dataclass
class Context:
    """What a stage's functions get besides its config: the recipe, the engine pool the stages share
    (generator/engines/pool.py; None before the run) and the constitutions this run has read."""

    recipe: Any
    pool: Any = None
    overwrite: bool = False
    constitutions: Constitutions = field(default_factory=Constitutions)


def _nothing(config, ctx: Context) -> None:
    return None


@dataclass(frozen=True)
class Stage:
    """One stage of the loop. Its folder is ``<root>/<name>`` and its metrics are ``<root>/<name>/metrics.json``."""

    options: Callable[[Any, str], dict]  # (recipe, name) -> its command's config as plain data (fingerprinted)
    config: Callable[[Any, dict, bool], Any]  # (recipe, options, checking) -> the validated config
    run: Callable[[Any, Context], str]  # (config, ctx) -> the console line; writes <root>/<name>
    reads: tuple[str, ...] = ()  # the stages whose output it reads, when the recipe lists them
    needs: tuple[str, ...] = ()  # it cannot run unless one of these is listed
    reads_trained: bool = False  # it also reads (and needs one of) the trained base and policy models: eval
    inputs: Callable[[Any, Context], None] = _nothing  # reads what the loop does not make, before anything runs
    metrics: Callable[[Path, Context], dict] | None = None  # the loop writes metrics.json; None: the run writes it
    preflight: Callable[[Any], None] | None = None  # checks that contact the network (not in a dry run)
    run_dir: bool = False  # its folder is a run directory: a resume keeps its shards (pipeline/root.py)
    cleared: bool = False  # its command writes only into an empty folder: the loop empties its own files first
    role: str | None = None  # training stages: "base" (the policy's start: SFT), "policy" (eval's), "model"
    engines: Callable[[Any], list] | None = None  # config -> the EngineOptions its run asks the pool for


@dataclass(frozen=True)
class Training:
    """The pipeline's side of an align method (align/__init__.py ``ALIGN_METHODS``, same name)."""

    data: str | None = None  # the stage whose output is its training data, PROMPTS, or None (its options name it)
    reads: tuple[str, ...] = ()  # other stages it reads and needs listed (PPO: the reward model)
    role: str = "model"  # "base" | "policy" | "model" (``Stage.role``)
    options: Callable[[Any, dict], dict] | None = None  # (recipe, options) -> options: method-specific defaults


# --- the models the policy starts from and eval compares -----------------------------------------------

def _role_stages(recipe, role: str) -> list[str]:
    return [s for s in recipe.stages if stages()[s].role == role]


def policy_start(recipe) -> str:
    """The model the policy stages start from: the base stage's output (SFT) when the loop has one."""
    base = _role_stages(recipe, "base")
    return str(recipe.path(base[0])) if base else recipe.model


def final_policy(recipe) -> str:
    """The model eval compares with the start model: the policy stage's output, else the base stage's (eval needs
    one of them listed)."""
    trained = _role_stages(recipe, "policy") or _role_stages(recipe, "base")
    return str(recipe.path(trained[0])) if trained else recipe.model


def _eval_options(recipe, name: str) -> dict:
    judge = {"constitution": b.const_path(recipe), "model": recipe.model, **recipe.options("judge")}
    return {"prompts": str(recipe.prompts_file()), "out": str(recipe.path(name)),
            "policy": b.engine_fields(recipe, final_policy(recipe)), "reference": b.engine_fields(recipe),
            "judge": judge, **recipe.options(name)}


# --- the registry --------------------------------------------------------------------------------------------

STAGES: dict[str, Stage | Training] = {
    "generate": Stage(b.generate_options, b.model_config("generator.generate:GenerateConfig"),
                      b.engine_run("generator.generate:run_generate"), inputs=b.generate_inputs,
                      metrics=lambda out, ctx: m.generate_metrics(out), run_dir=True, engines=b.stage_engine),
    "revise": Stage(b.revise_options, b.model_config("generator.revise:ReviseConfig"),
                    b.engine_run("generator.revise:run_revise"), inputs=b.revise_inputs,
                    metrics=lambda out, ctx: m.revise_metrics(out), run_dir=True, engines=b.stage_engine),
    "sft": Training(data="revise", role="base"),
    "judge": Stage(b.judge_options, b.model_config("judge.config:JudgeConfig"), b.judge_run, reads=("generate",),
                   needs=("generate",), inputs=b.judge_inputs, run_dir=True, engines=b.judge_engine,
                   metrics=lambda out, ctx: m.judge_metrics(out, ctx.constitutions.load)),
    "reward": Training(data="judge"),
    "dpo": Training(data="judge", role="policy"),
    "ppo": Training(data=PROMPTS, reads=("reward",), role="policy", options=b.ppo_options),
    "grpo": Training(role="policy", options=b.grpo_options),
    "eval": Stage(_eval_options, b.eval_config, b.eval_run, reads_trained=True, inputs=b.eval_inputs, run_dir=True),
    "publish": Stage(b.publish_options, b.publish_config, b.publish_run, reads=("judge",), needs=("judge",),
                     inputs=b.publish_inputs, preflight=check_hub, cleared=True),
}


def register(name: str, entry: Stage | Training, before: str | None = "eval") -> None:
    """Add a stage (or an align method's ``Training`` side) to the loop, placed before ``before`` (the end when
    None or not registered)."""
    if name in STAGES:
        raise ValueError(f"stage {name!r} is registered already")
    items = list(STAGES.items())
    at = [n for n, _ in items].index(before) if before in STAGES else len(items)
    STAGES.clear()
    STAGES.update([*items[:at], (name, entry), *items[at:]])


def unregister(name: str) -> None:
    STAGES.pop(name, None)


def stages() -> dict[str, Stage]:
    """Every registered stage, in the loop's order, the training entries made whole from align's registry."""
    roles = {n: e.role for n, e in STAGES.items()}
    trained = tuple(n for n, r in roles.items() if r in ("base", "policy"))
    out = {}
    for name, entry in STAGES.items():
        if isinstance(entry, Training):
            if name not in ALIGN_METHODS:
                raise PipelineError(f"stage {name}: no align method {name!r} (align/__init__.py ALIGN_METHODS)")
            entry = _training_stage(name, entry, bases=tuple(n for n, r in roles.items() if r == "base"))
        if entry.reads_trained:
            entry = replace(entry, reads=(*entry.reads, *trained), needs=(*entry.needs, *trained))
        out[name] = entry
    return out


def _training_stage(name: str, t: Training, bases: tuple[str, ...]) -> Stage:
    data = (t.data,) if t.data not in (None, PROMPTS) else ()
    start = bases if t.role == "policy" else ()

    def options(recipe, stage: str) -> dict:
        source = recipe.prompts_file() if t.data == PROMPTS else recipe.path(t.data) if t.data else None
        raw = {"model": policy_start(recipe) if t.role == "policy" else recipe.model,
               "output_dir": str(recipe.path(stage)), "quiet": True,
               **({"data": str(source)} if source else {}), **recipe.options(stage)}
        return t.options(recipe, raw) if t.options else raw

    def config(recipe, raw: dict, checking: bool):
        if checking:  # the start model may be one an earlier stage writes: checked as the loop's start model
            raw = {**raw, "model": recipe.model}
        return build_recipe(name, raw, source=f"stage {name}")

    return Stage(options, config, b.training_run, reads=(*data, *t.reads, *start), needs=(*data, *t.reads),
                 inputs=b.training_inputs, role=t.role)


def upstream(stage: str) -> tuple[str, ...]:
    return stages()[stage].reads


# --- what the loop calls -------------------------------------------------------------------------------------

def stage_inputs(recipe, stage: str) -> dict[str, Any]:
    """The options of one stage, as its command's config takes them (plain data: also what is fingerprinted)."""
    return stages()[stage].options(recipe, stage)


def build(recipe, stage: str, checking: bool = False):
    """The stage's config object. ``checking``: before the loop runs, models that earlier stages will
    write are not there yet, so they are checked as the start model (the keys are what is checked)."""
    return stages()[stage].config(recipe, stage_inputs(recipe, stage), checking)


def _one_line(stage: str, e: Exception) -> PipelineError:
    line = " ".join(str(e).split())
    return PipelineError(line if line.startswith(f"stage {stage}") else f"stage {stage}: {line}")


def build_all(recipe) -> dict[str, dict]:
    """Every listed stage's options, each checked by building its config; a bad key fails here in one line."""
    import json

    from pydantic import ValidationError

    from plumbing.errors import validation_line

    out = {}
    for stage in recipe.stages:
        try:
            build(recipe, stage, checking=True)
        except ValidationError as e:
            raise PipelineError(validation_line(e, f"stage {stage}", more=False)) from None
        except ValueError as e:
            raise _one_line(stage, e) from None
        out[stage] = json.loads(json.dumps(stage_inputs(recipe, stage), default=str))
    return out


def check_inputs(recipe, names: list[str], ctx: Context | None = None) -> None:
    """Read every input of the stages ``names`` that the loop does not make itself, the way the stage will read
    it, so a bad one is refused (one line) before the root or any stage folder exists: prompt files, a training
    stage's own data, the constitution and template folders. What comes from the root's stage folders is checked
    by the stage reading it."""
    ctx = ctx or Context(recipe)
    for stage in names:
        try:
            stages()[stage].inputs(build(recipe, stage, checking=True), ctx)
        except (ValueError, OSError) as e:
            raise _one_line(stage, e) from None


def preflight(recipe, names: list[str]) -> None:
    """The network checks of the stages ``names`` (a publish that uploads: a token and a Hub that answers)."""
    for stage in names:
        check = stages()[stage].preflight
        if check is not None:
            check(build(recipe, stage))


def plan_engines(recipe, running: list[str], pool) -> None:
    """Tell the pool every engine the running stages will ask for, so that stages serving one model (generate and
    a judge of the same model) share one engine built with the settings of both (the judge's CPU KV-block size:
    generator/engines/pool.py) instead of rebuilding it between them."""
    pool.plan(opts for stage in running if stages()[stage].engines for opts in stages()[stage].engines(build(recipe, stage)))


def run_stage(stage: str, recipe, pool, overwrite: bool, ctx: Context | None = None) -> str:
    """Run ``stage`` (resuming its run directory unless ``overwrite``), then write its metrics.json when the loop
    writes it; returns one line for the console."""
    ctx = replace(ctx, pool=pool, overwrite=overwrite) if ctx else Context(recipe, pool, overwrite)
    entry = stages()[stage]
    line = entry.run(build(recipe, stage), ctx)
    if entry.metrics is not None:
        out = recipe.path(stage)
        m.write_metrics(out, entry.metrics(out, ctx))
    return line
