"""Each stage's fingerprint (pipeline/loop.py's docstring says what counts): its options without runtime knobs, every
local input by its content, and the fingerprints of the stages it reads."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from generator.engines.options import RUNTIME_FIELDS
from pipeline.constitutions import Constitutions
from pipeline.errors import PipelineError
from pipeline.recipe import PipelineRecipe
from pipeline.stages import stage_inputs, upstream
from plumbing.hashing import file_sha256, sha256_of

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


def constitution_parts(path: str | Path, constitutions: Constitutions | None = None) -> dict[str, str]:
    """sha256 of what revise reads (critique/revision texts), what a judge reads (the rest) and what publish
    reads (the whole file, shown in the dataset card)."""
    data = (constitutions or Constitutions()).load(path).model_dump(mode="json")
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

    def __init__(self, root: str, stages: list[str], constitutions: Constitutions | None = None):
        from generator.models import EMBEDDED

        self.root, self.stages, self.names, self.memo = root, set(stages), set(EMBEDDED), {}
        self.constitutions = constitutions or Constitutions()

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
                parts = self._memo(("constitution", real), lambda p: constitution_parts(p, self.constitutions), path)
                return {"constitution": parts[part]}
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
    """The listed stages whose output ``stage`` reads: its ``upstream`` ones (pipeline/stages.py), and any other
    whose folder its options (``stage_inputs``) name, e.g. a judge that is the loop's own SFT model
    (self-rewarding, arXiv 2401.10020). Their fingerprints are part of its fingerprint and it runs whenever they
    run (``plan``). A stage that names the folder of a stage running after it would read that stage's previous
    output: refused."""
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
    return [s for s in recipe.stages if s != stage and (s in named or s in upstream(stage))]


def fingerprints(recipe: PipelineRecipe, configs: dict[str, dict],
                 constitutions: Constitutions | None = None) -> dict[str, str]:
    """Each listed stage's fingerprint (pipeline/loop.py's docstring), in the loop's order; ``constitutions`` is
    the run's memo of parsed constitution files (pipeline/constitutions.py)."""
    reads = _Reads(str(Path(recipe.root)), recipe.stages, constitutions)
    out: dict[str, str] = {}
    for stage in recipe.stages:
        fed_by = {s: out[s] for s in reads_from(recipe, stage, configs[stage]) if s in out}
        out[stage] = sha256_of({"stage": stage, "config": reads.of(stage, configs[stage]), "upstream": fed_by})
    return out
