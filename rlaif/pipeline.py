"""``rlaif run RECIPE.yaml``: the whole loop from one recipe, resumably.

A pipeline recipe names the constitution, the models, the prompts and the stages; each stage is a
run directory ``<root>/<stage>`` fed by the stages before it (``UPSTREAM``)::

    generate -> revise (SL-CAI) -> sft -> judge -> reward -> dpo | ppo | grpo -> eval -> publish

The stage commands stay the single implementation: ``rlaif/pipeline_stages.py`` builds each
stage's own config (GenerateConfig, ReviseConfig, JudgeConfig, the align recipes, EvalConfig,
PublishConfig) and calls the function its command calls.

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
(rlaif/pipeline_report.py).

The loop writes only into a new or empty folder or a root it made (``pipeline.json`` with the
``rlaif-pipeline`` format marker), and replaces only files it wrote there: rlaif/pipeline_root.py.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from generator.engines.options import RUNTIME_FIELDS
from plumbing.hashing import file_sha256, sha256_of
from rlaif.pipeline_root import (
    CLEARED,
    LOCK,
    STAGES,
    PipelineError,
    check_root,
    check_stage_folder,
    clear_stage_folder,
    listing,
    read_state,
    replaces,
    save_state,
    write_root_files,
)

TRAINED = ("dpo", "ppo", "grpo")
# The stages a stage reads (when the recipe lists them).
UPSTREAM: dict[str, tuple[str, ...]] = {
    "generate": (), "revise": (), "sft": ("revise",), "judge": ("generate",), "reward": ("judge",),
    "dpo": ("judge", "sft"), "ppo": ("reward", "sft"), "grpo": ("sft",),
    "eval": ("sft", "dpo", "ppo", "grpo"), "publish": ("judge",),
}
# Stages that cannot run without one of these listed.
NEEDS: dict[str, tuple[str, ...]] = {"sft": ("revise",), "judge": ("generate",), "reward": ("judge",),
                                     "dpo": ("judge",), "ppo": ("reward",), "eval": ("sft", *TRAINED),
                                     "publish": ("judge",)}
BUNDLED_PROMPTS = Path(__file__).resolve().parent / "data" / "demo_prompts.jsonl"


class Engines(BaseModel):
    model_config = ConfigDict(extra="forbid")
    engine: str = Field("auto", description="Engine of generate, revise and eval's models: auto | vllm | openai | "
                        "transformers.")
    base_urls: list[str] = Field(default_factory=list, description="`rlaif engine serve` URLs (openai engine).")
    batch_size: int = Field(16, ge=1, description="Prompts per engine call and per shard.")


class PipelineRecipe(BaseModel):
    """One loop: what a user decides. Each stage's mapping holds that stage's own options (the keys of
    its command's config), checked when the recipe loads."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="Name shown in the report.")
    root: str = Field(description="Folder of the stages' run directories, pipeline.json and report.md.")
    stages: list[str] = Field(min_length=1, description=f"Stages to run, a subset of {', '.join(STAGES)}.")
    model: str = Field("smollm2-135m", description="The model the loop starts from (responses, revisions, the "
                       "policy's start and eval's reference).")
    constitution: str | None = Field(None, description="Constitution YAML; default: the built-in one.")
    prompts: str | None = Field(None, description="Prompt file of generate, revise and eval; default: the 16 "
                                "bundled demo prompts (rlaif/data/demo_prompts.jsonl).")
    engine: Engines = Field(default_factory=Engines)
    generate: dict[str, Any] = Field(default_factory=dict)
    revise: dict[str, Any] = Field(default_factory=dict)
    judge: dict[str, Any] = Field(default_factory=dict, description="JudgeConfig keys: model, engine, base_urls, "
                                  "principles_per_pair, layout, calibrate, ...")
    sft: dict[str, Any] = Field(default_factory=dict, description="Keys of an `rlaif align sft` recipe.")
    reward: dict[str, Any] = Field(default_factory=dict, description="Keys of an `rlaif align reward` recipe.")
    dpo: dict[str, Any] = Field(default_factory=dict, description="Keys of an `rlaif align dpo` recipe.")
    ppo: dict[str, Any] = Field(default_factory=dict, description="Keys of an `rlaif align ppo` recipe.")
    grpo: dict[str, Any] = Field(default_factory=dict, description="Keys of an `rlaif align grpo` recipe "
                                 "(data: its prompts, e.g. a `rlaif data gsm8k` run).")
    eval: dict[str, Any] = Field(default_factory=dict, description="EvalConfig keys: max_tokens, limit, ...")
    publish: dict[str, Any] = Field(default_factory=dict, description="repo_id, private, dry_run (default: "
                                    "true: the files go to <root>/publish and nothing is uploaded).")

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, v: list[str]) -> list[str]:
        unknown = [s for s in v if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage {unknown[0]!r}; stages are {', '.join(STAGES)}")
        if len(set(v)) != len(v):
            raise ValueError("a stage is listed twice")
        return [s for s in STAGES if s in v]  # the loop's order, whatever the listing's

    @model_validator(mode="after")
    def _needs(self) -> PipelineRecipe:
        for stage in self.stages:
            needed = NEEDS.get(stage, ())
            if needed and not set(needed) & set(self.stages):
                raise ValueError(f"stage {stage!r} reads the output of {' or '.join(needed)}; add it to stages")
        if len(set(TRAINED) & set(self.stages)) > 1:
            raise ValueError(f"list one of {', '.join(TRAINED)}: eval compares one trained policy with the start model")
        return self

    def path(self, stage: str) -> Path:
        return Path(self.root) / stage

    def prompts_file(self) -> Path:
        return Path(self.prompts) if self.prompts else BUNDLED_PROMPTS


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> PipelineRecipe:
    """The recipe at ``path`` with ``--set`` overrides, every stage's config built (so a bad key fails here)."""
    from align.config import merge, parse_set, read_yaml
    from generator.engines.options import strip_credentials_everywhere
    from rlaif.pipeline_stages import build_all

    try:
        # server credentials (http://user:key@host) stay in memory: never in pipeline.json nor any record
        raw = strip_credentials_everywhere(merge(read_yaml(path), parse_set(overrides or [])))
    except ValueError as e:
        raise PipelineError(str(e)) from None
    try:
        recipe = PipelineRecipe.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ())) or "recipe"
        raise PipelineError(f"{path}: {loc}: {first.get('msg', 'invalid').removeprefix('Value error, ')}") from None
    if not recipe.prompts_file().is_file():
        raise PipelineError(f"{path}: prompts {recipe.prompts_file()}: no such file")
    build_all(recipe)  # each stage's own validation, before anything is written
    return recipe


# --- fingerprints and the plan -------------------------------------------------------------------------------

# Options that name what a stage reads. A local file or folder there is fingerprinted by its content, never by
# its name or place; an embedded model name or a Hub id stays a name. The last four are TRL's (under `trl:`):
# files TRL reads (a chat template; DeepSpeed, FSDP and accelerate configs).
INPUT_KEYS = frozenset({"prompts", "input", "data", "path", "model", "reward_model", "value_model", "templates",
                        "run_dir", "eval_dir", "constitution",
                        "chat_template_path", "deepspeed", "fsdp_config", "accelerator_config"})
# Options naming user code as module:attr (a reward function, an engine class): its module's file counts.
CODE_KEYS = frozenset({"reward_funcs", "engine"})
# Options that change how a stage runs, not what it computes (ARCHITECTURE: runtime knobs are not part of the spec
# hash), left out: the engines' server URLs and batch size (RUNTIME_FIELDS, which the run directories' specs leave
# out too), align's progress bars, and under `trl:` TRL's logging, reporting, data-loader workers and vLLM server
# address. A training batch (per_device_train_batch_size, gradient_accumulation_steps) is the optimizer's and
# counts; so do TRL's save_* and eval_* (under load_best_model_at_end they choose the model kept) and `limit` (a
# stage that is reused is not topped up, as a run directory that resumes is).
RUNTIME_KEYS = frozenset({*RUNTIME_FIELDS, "quiet"})
TRL_RUNTIME_KEYS = frozenset({
    "logging_steps", "logging_strategy", "logging_first_step", "logging_nan_inf_filter", "log_level",
    "log_level_replica", "log_on_each_node", "report_to", "run_name", "project", "log_completions",
    "num_completions_to_print", "dataloader_num_workers", "dataloader_persistent_workers", "dataloader_prefetch_factor",
    "dataloader_pin_memory", "vllm_server_base_url", "vllm_server_host", "vllm_server_port", "vllm_server_timeout"})


def constitution_parts(path: str | Path) -> dict[str, str]:
    """sha256 of what revise reads (critique/revision texts), what a judge reads (the rest) and what publish
    reads (the whole file, shown in the dataset card)."""
    from constitution import load_constitution

    data = load_constitution(path).model_dump(mode="json")
    principles = data.pop("principles", [])
    revise = [{k: p.get(k) for k in ("id", "critique", "revision", "weight")} for p in principles]
    judge = [{k: v for k, v in p.items() if k not in ("critique", "revision")} for p in principles]
    return {"revise": sha256_of({**data, "principles": revise}), "judge": sha256_of({**data, "principles": judge}),
            "publish": file_sha256(path)}


def input_sha256(path: Path) -> str:
    """What a stage reads from a local path, by content (plumbing/hashing.py): a file's bytes; a run directory's
    manifest (stage, spec hash, status, counts, features) and its shards in load order, so neither its
    path, its start times nor its logs count; a model folder's top-level files (config.json, weights or their
    index, tokenizer files: what ``from_pretrained`` reads, and an `rlaif align` output's manifest.json beside
    them; checkpoints and logs in subfolders are not); any other folder (a template folder) all its files."""
    from plumbing.hashing import content_sha256, folder_sha256, is_model_folder
    from plumbing.runs import RunError, read_manifest, shard_files

    if path.is_file():
        return content_sha256(path)
    if not path.is_dir():  # a pipe or a device: nothing a stage reads as data
        raise NotADirectoryError(errno.ENOTDIR, "neither a file nor a folder", str(path))
    if is_model_folder(path):  # before the manifest: an align output's has no shards, its weights are the input
        return folder_sha256(path, recursive=False)
    try:
        manifest = read_manifest(path)
    except RunError:  # no manifest, or not ours: the folder is read as what it is
        return folder_sha256(path)
    shards = [[f.name.split("-", 1)[0], content_sha256(f)] for f in shard_files(path)]
    kept = {k: manifest.get(k) for k in ("stage", "spec_sha256", "status", "counts", "features")}
    return sha256_of({**kept, "shards": shards})


class _Reads:
    """One stage's options without runtime knobs, with every local input replaced by its content hash
    (``input_sha256``; the constitution by the part the stage reads; user code by its module's file) and every
    folder of this loop's root named relative to it: where the root lies is not what a stage computes, and a
    stage folder's content is its stage's fingerprint (it is not there before the stage runs)."""

    def __init__(self, root: str, stages: list[str]):
        from generator.models import EMBEDDED

        self.root, self.stages, self.names, self.memo = root, set(stages), set(EMBEDDED), {}

    def of(self, stage: str, value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: self.of(stage, v, k) for k, v in _runtime_free(value, key).items()}
        if isinstance(value, list):
            return [self.of(stage, v, key) for v in value]
        if not isinstance(value, str):
            return value
        path, name, code = Path(value).expanduser(), _root_name(self.root, value), key in CODE_KEYS and ":" in value
        if name is not None and (key not in INPUT_KEYS or _stage_of(name) in self.stages or not path.exists()):
            return name  # a stage's folder counts by that stage's fingerprint (``reads_from``)
        if not code and (key not in INPUT_KEYS or value in self.names or not path.exists()):
            return value
        real = str(path.resolve())
        try:
            if code:  # found where `import` finds it (the recipe's check imported it already)
                from plumbing.hashing import source_sha256

                return {"code": value, "sha256": self._memo(("code", value), source_sha256, value)}
            if key == "constitution":
                part = stage if stage in ("revise", "publish") else "judge"
                return {"constitution": self._memo(("constitution", real), constitution_parts, path)[part]}
            return {"sha256": self._memo(real, input_sha256, path)}
        except OSError as e:
            raise PipelineError(f"stage {stage}: {key} {value}: cannot be read ({e.strerror or e})") from None
        except ValueError as e:  # a constitution that does not load: its own line names the file and the fix
            raise PipelineError(f"stage {stage}: {' '.join(str(e).split())}") from None

    def _memo(self, key: Any, fn: Callable, path: Path | str) -> Any:
        if key not in self.memo:  # a model or a prompt file read by several stages is hashed once per plan
            self.memo[key] = fn(path)
        return self.memo[key]


def _runtime_free(options: dict, parent: str) -> dict:
    """``options`` without its runtime knobs (``RUNTIME_KEYS``; ``TRL_RUNTIME_KEYS`` under ``trl``). An engine left
    to ``auto`` that its server URLs make the openai engine is named so: the engine kind counts, its URLs do not."""
    if parent == "trl":
        return {k: v for k, v in options.items() if k not in TRL_RUNTIME_KEYS}
    if options.get("base_urls") and options.get("engine", "auto") == "auto":
        options = {**options, "engine": "openai"}
    out = {k: v for k, v in options.items() if k not in RUNTIME_KEYS}
    if isinstance(out.get("trl"), dict) and not set(out["trl"]) - TRL_RUNTIME_KEYS:
        del out["trl"]  # TRL's own defaults, as with no `trl:` at all
    return out


def _root_name(root: str, value: str) -> str | None:
    """``value`` named relative to the loop's root (``<root>/sft/...``) when it lies in it, else None."""
    if value == root or value.startswith(root + os.sep):
        return "<root>" + value[len(root):]
    if not value.startswith(("/", "./", "../", "~")):  # a name, a Hub id, a URL (generator/models.py's rule)
        return None
    try:  # another spelling of a path in the root (./root/sft, a symlinked parent)
        rel = Path(value).expanduser().resolve().relative_to(Path(root).expanduser().resolve())
    except (ValueError, OSError, RuntimeError):
        return None
    return "/".join(("<root>", *rel.parts))


def _stage_of(name: str) -> str | None:
    """The stage whose folder holds ``<root>/<stage>/...``."""
    parts = name.split("/")
    return parts[1] if len(parts) > 1 else None


def reads_from(recipe: PipelineRecipe, stage: str, options: dict | None = None) -> list[str]:
    """The listed stages whose output ``stage`` reads: its ``UPSTREAM`` ones, and any other whose folder its
    options (``stage_inputs``) name, e.g. a judge that is the loop's own SFT model (self-rewarding, arXiv
    2401.10020). Their fingerprints are part of its fingerprint and it runs whenever they run (``plan``). A
    stage that names the folder of a stage running after it would read that stage's previous output: refused."""
    from rlaif.pipeline_stages import stage_inputs

    root, named = str(Path(recipe.root)), set()
    todo = [stage_inputs(recipe, stage) if options is None else options]
    while todo:
        value = todo.pop()
        if isinstance(value, dict | list):
            todo.extend(value.values() if isinstance(value, dict) else value)
        elif isinstance(value, str | Path) and (name := _root_name(root, str(value))) is not None:
            named.add(_stage_of(name))
    later = [s for s in recipe.stages[recipe.stages.index(stage) + 1:] if s in named]
    if later:
        raise PipelineError(f"stage {stage} reads {recipe.path(later[0])}, the folder of stage {later[0]}, which runs "
                            f"after it; give a copy outside the root {recipe.root}")
    return [s for s in recipe.stages if s != stage and (s in named or s in UPSTREAM[stage])]


def fingerprints(recipe: PipelineRecipe, configs: dict[str, dict]) -> dict[str, str]:
    """Each listed stage's fingerprint (module docstring), in the loop's order."""
    reads = _Reads(str(Path(recipe.root)), recipe.stages)
    out: dict[str, str] = {}
    for stage in recipe.stages:
        upstream = {s: out[s] for s in reads_from(recipe, stage, configs[stage]) if s in out}
        out[stage] = sha256_of({"stage": stage, "config": reads.of(stage, configs[stage]), "upstream": upstream})
    return out


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

    Everything is checked before anything is created: the root is ours or new (rlaif/pipeline_root.py), the
    stages that run can read their inputs, and (not in a dry run, which contacts nothing) a publish stage that
    uploads has a token and a Hub that answers (rlaif/pipeline_stages.py ``check_inputs``, ``check_hub``)."""
    from rlaif.pipeline_stages import build_all, check_hub, check_inputs

    root = Path(recipe.root)
    state = read_state(root)
    check_root(root, state)
    steps = plan(recipe, fingerprints(recipe, build_all(recipe)), state, start, until)
    for step in steps:
        if replaces(step.stage, step.action):
            check_stage_folder(root, state, step.stage)
    running = [s.stage for s in steps if s.action in ("run", "resume")]
    check_inputs(recipe, running)
    if not dry_run and "publish" in running:
        check_hub(recipe)
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
        return _run_locked(recipe, root, steps, say)
    finally:
        lock.release()


def _run_locked(recipe: PipelineRecipe, root: Path, steps: list[Step], say: Callable[[str], None]) -> list[Step]:
    from plumbing.logs import attach_run_log
    from rlaif.pipeline_report import REPORT, report_files
    from rlaif.pipeline_stages import EnginePool, run_stage

    state = read_state(root)  # as it is now that this run holds the lock
    check_root(root, state)
    state["recipe"] = recipe.model_dump(mode="json")
    save_state(root, state)  # first: the root is ours from now on (rlaif/pipeline_root.py)
    attach_run_log(root)  # the libraries' output (vLLM, TRL) goes to <root>/logs/rlaif.log, not the console
    pool = EnginePool()
    try:
        for step in steps:
            if step.action in ("reuse", "skip"):
                continue
            if replaces(step.stage, step.action):  # nothing of anyone else's appeared there meanwhile
                (clear_stage_folder if step.stage in CLEARED else check_stage_folder)(root, state, step.stage)
            replace = step.action == "run" and step.why != "not run yet"  # a resume keeps its whole shards
            files = (state["stages"].get(step.stage) or {}).get("files")  # ours until the stage lists its own
            state["stages"][step.stage] = {"fingerprint": step.fingerprint, "started": _now(),
                                           **({"files": files} if files else {})}
            save_state(root, state)
            say(f"[{step.stage}] {step.why} ...")
            t0 = time.perf_counter()
            line = run_stage(step.stage, recipe, pool, overwrite=replace)
            seconds = round(time.perf_counter() - t0, 1)
            state["stages"][step.stage].update(finished=_now(), seconds=seconds,
                                               files=listing(recipe.path(step.stage)))
            save_state(root, state)
            say(f"[{step.stage}] {line} ({seconds} s)")
    finally:
        pool.close()
    write_root_files(root, state, report_files(recipe))  # each recorded as ours (rlaif/pipeline_root.py)
    say(f"report: {root / REPORT}")
    return steps


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
