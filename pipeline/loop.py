"""``rlaif run RECIPE.yaml``: the whole loop from one recipe, resumably.

A pipeline recipe names the constitution, the models, the prompts and the stages; each stage is a
run directory ``<root>/<stage>`` fed by the stages before it (``upstream``)::

    generate -> revise (SL-CAI) -> sft -> judge -> reward -> dpo | ppo | grpo -> eval -> publish

The stage commands stay the single implementation: the stage registry (``pipeline/stages.py``) declares what each
stage reads, builds its command's own config (GenerateConfig, ReviseConfig, JudgeConfig, the align recipes,
EvalConfig, PublishConfig), calls the function its command calls and writes its metrics.json; this loop knows no
stage by name.

Each stage has a fingerprint: the sha256 of its options and of the fingerprints of the stages it reads, where
every local file or folder an option names counts by its content, not its name or place (``input_sha256``: a
prompt or data file's bytes, a template folder's files, a run directory's manifest and shards, a model
folder's config, weights and tokenizer; a user reward's module by its file) and the constitution by the part the
stage reads (revise: the critique and revision texts; judge, eval and a judge reward: the comparison questions;
publish: the whole file); runtime knobs (``RUNTIME_KEYS``) do not count. Stage folders of the root count by their
stage's fingerprint, also where a stage reads one outside ``UPSTREAM`` (``reads_from``), so a moved root keeps
its fingerprints too (tests/test_pipeline_review.py, tests/test_pipeline_fingerprints.py).
``<root>/pipeline.json`` keeps the fingerprint of every finished stage. A stage is reused when its fingerprint
is unchanged and it finished; a stage that started and did not finish resumes (its run directory keeps whole
shards); a changed fingerprint re-runs the stage, replacing its own run directory, and so changes every
fingerprint downstream (tests/test_pipeline.py). Every run ends with ``<root>/report.md``
(pipeline/report.py).

The loop writes only into a new or empty folder or a root it made (``pipeline.json`` with the
``rlaif-pipeline`` format marker), and replaces only files it wrote there: pipeline/root.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.constitutions import Constitutions
from pipeline.errors import PipelineError
from pipeline.fingerprints import fingerprints, reads_from
from pipeline.recipe import PipelineRecipe
from pipeline.root import (
    LOCK,
    check_root,
    check_stage_folder,
    clear_stage_folder,
    listing,
    read_state,
    replaces,
    save_state,
    write_root_files,
)
from pipeline.stages import Context, build_all, check_inputs, plan_engines, preflight, run_stage, stages


@dataclass
class Step:
    stage: str
    action: str  # "reuse" | "run" | "resume" | "skip"
    why: str
    fingerprint: str

    def line(self) -> str:
        return f"  {self.stage:<9} {self.action:<7} {self.why}"


def plan(recipe: PipelineRecipe, fps: dict[str, str], state: dict, start: str | None = None,
         until: str | None = None) -> list[Step]:
    """What runs, what is reused and why; ``start`` forces a re-run from that stage, ``until`` stops after one."""
    for flag, name in (("--from", start), ("--until", until)):
        if name is not None and name not in recipe.stages:
            raise PipelineError(f"{flag} {name}: not a stage of this recipe ({', '.join(recipe.stages)})")
    done = state.get("stages", {})
    steps: list[Step] = []
    running: set[str] = set()  # stages that run (so every stage reading them runs too)
    forced = past_until = False
    for stage in recipe.stages:
        fp, old = fps[stage], done.get(stage, {})
        fed_by = [u for u in reads_from(recipe, stage) if u in running]
        forced = forced or start == stage
        if past_until:
            step = Step(stage, "skip", f"after --until {until}", fp)
        elif forced:
            step = Step(stage, "run", "--from" if start == stage else f"after --from {start}", fp)
        elif fed_by:
            step = Step(stage, "run", f"{fed_by[0]} runs before it", fp)
        elif old.get("finished") and old.get("fingerprint") == fp:
            step = Step(stage, "reuse", f"finished {old['finished']}, spec unchanged", fp)
        elif old.get("fingerprint") == fp:
            step = Step(stage, "resume", "started and not finished: it resumes", fp)
        elif old.get("fingerprint"):
            step = Step(stage, "run", "its spec or an input changed", fp)
        else:
            step = Step(stage, "run", "not run yet", fp)
        if step.action in ("run", "resume"):
            running.add(stage)
        steps.append(step)
        past_until = past_until or stage == until
    if start is not None:
        before = [s for s in steps[:[s.stage for s in steps].index(start)] if s.action != "reuse"]
        if before:
            raise PipelineError(f"--from {start}: {before[0].stage} before it has not finished with this spec; "
                                f"run without --from first")
    return steps


# --- running --------------------------------------------------------------------------------------------------

def run_pipeline(recipe: PipelineRecipe, start: str | None = None, until: str | None = None, dry_run: bool = False,
                 say: Callable[[str], None] = print) -> list[Step]:
    """Run (or with ``dry_run`` only show) the plan; returns it. The report is rewritten at the end.

    Everything is checked before anything is created: the root is ours or new (pipeline/root.py), the
    stages that run can read their inputs, and (not in a dry run, which contacts nothing) their network checks
    pass, e.g. a publish stage that uploads has a token and a Hub that answers (pipeline/stages.py
    ``check_inputs``, ``preflight``). Each constitution file is parsed once for the whole run (``Constitutions``)."""
    root = Path(recipe.root)
    state = read_state(root)
    check_root(root, state)
    ctx = Context(recipe, constitutions=Constitutions())
    steps = plan(recipe, fingerprints(recipe, build_all(recipe), ctx.constitutions), state, start, until)
    for step in steps:
        if replaces(step.stage, step.action):
            check_stage_folder(root, state, step.stage)
    running = [s.stage for s in steps if s.action in ("run", "resume")]
    check_inputs(recipe, running, ctx)
    if not dry_run:
        preflight(recipe, running)
    say(f"pipeline {recipe.name} -> {root}")
    for step in steps:
        say(step.line())
    if dry_run:
        return steps
    from filelock import FileLock, Timeout

    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(root / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise PipelineError(f"root {root}: another `rlaif run` is using it (lock {root / LOCK})") from None
    try:
        return _run_locked(recipe, root, steps, say, ctx)
    finally:
        lock.release()


def _run_locked(recipe: PipelineRecipe, root: Path, steps: list[Step], say: Callable[[str], None],
                ctx: Context) -> list[Step]:
    from generator.engines.pool import EnginePool
    from pipeline.report import REPORT, report_files
    from plumbing.logs import attach_run_log

    state = read_state(root)  # as it is now that this run holds the lock
    check_root(root, state)
    state["recipe"] = recipe.model_dump(mode="json")
    save_state(root, state)  # first: the root is ours from now on (pipeline/root.py)
    attach_run_log(root)  # the libraries' output (vLLM, TRL) goes to <root>/logs/rlaif.log, not the console
    pool = EnginePool()
    plan_engines(recipe, [s.stage for s in steps if s.action in ("run", "resume")], pool)
    try:
        for step in steps:
            if step.action in ("reuse", "skip"):
                continue
            if replaces(step.stage, step.action):  # nothing of anyone else's appeared there meanwhile
                clear = clear_stage_folder if stages()[step.stage].cleared else check_stage_folder
                clear(root, state, step.stage)
            replace = step.action == "run" and step.why != "not run yet"  # a resume keeps its whole shards
            files = (state["stages"].get(step.stage) or {}).get("files")  # ours until the stage lists its own
            state["stages"][step.stage] = {"fingerprint": step.fingerprint, "started": _now(),
                                           **({"files": files} if files else {})}
            save_state(root, state)
            say(f"[{step.stage}] {step.why} ...")
            t0 = time.perf_counter()
            line = run_stage(step.stage, recipe, pool, overwrite=replace, ctx=ctx)
            seconds = round(time.perf_counter() - t0, 1)
            state["stages"][step.stage].update(finished=_now(), seconds=seconds,
                                               files=listing(recipe.path(step.stage)))
            save_state(root, state)
            say(f"[{step.stage}] {line} ({seconds} s)")
    finally:
        pool.close()
    write_root_files(root, state, report_files(recipe))  # each recorded as ours (pipeline/root.py)
    say(f"report: {root / REPORT}")
    return steps


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
