"""A recipe submitted over HTTP, checked before it is queued: the folders it may read, then ``rlaif run
--dry-run``'s own code (``load_pipeline`` + ``run_pipeline(..., dry_run=True)``) with the job's run folder as
its root, so a refusal is the line ``rlaif run --dry-run`` prints and an accepted job comes with its plan.

What a recipe may name (tests/test_service.py): every option that names what a stage reads (the keys of
``pipeline.fingerprints.INPUT_KEYS``, at any depth) holds an absolute path that, once symlinks and ``..`` are
resolved, lies in an upload (``<root>/uploads``), the
bundled data (the files of rlaif's own packages) or a folder the operator gave with ``--data-dir``; a model option may also hold a model name (the
embedded name, a Hub id ``org/name``) that is no local path. The service
sets ``root`` itself and places every stage's output in the job's run folder, so an output option (``out``,
``output_dir``, ``logging_dir``, a path as publish's ``dry_run``) is refused, and so is user code named as
``module:attr`` (an engine class, a reward function): the service runs the built-in ones only. A recipe or
override holding a secret (a Hub token, an API key, URL credentials, the value of a secret environment
variable) is refused rather than stored: nothing the service keeps holds one (plumbing/capture.py ``redact``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from plumbing.capture import OUR_PACKAGES, redact
from service import ab_job

OUTPUT_KEYS = frozenset({"out", "output_dir", "logging_dir"})
NAME_KEYS = frozenset({"model", "reward_model", "value_model"})  # where a name (not a path) is meaningful
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")  # a model name or a Hub id
_DRY_RUN = threading.Lock()  # the pipeline's checks were written for one command at a time


class Refused(ValueError):
    """The recipe cannot be queued; the message is one line for the user."""


@dataclass(frozen=True)
class Checked:
    name: str
    plan: list[dict]


def bundled_dirs() -> list[Path]:
    """The folders of rlaif's own packages (the bundled prompts, constitution and templates are there)."""
    out = []
    for name in sorted(OUR_PACKAGES):
        spec = importlib.util.find_spec(name)
        for loc in (spec.submodule_search_locations or []) if spec else []:
            out.append(Path(loc).resolve())
    return out


def _inside(path: Path, folders: list[Path]) -> bool:
    return any(path == f or path.is_relative_to(f) for f in folders)


def _walk(node, where: str = "", keys: tuple[str, ...] = ()):
    """(dotted place, value, keys above it) for every string in a parsed recipe."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{where}.{k}" if where else str(k), (*keys, str(k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{where}[{i}]", keys)
    elif isinstance(node, str):
        yield where, node, keys


def check_paths(raw: dict, job_dir: Path, allowed: list[Path]) -> None:
    """Refuse (one line) what a recipe sent over HTTP may not name; see the module docstring."""
    from pipeline.fingerprints import CODE_KEYS, INPUT_KEYS

    where_to = ("upload the file (POST /api/v1/uploads) and name the path it gets, use the bundled data, or ask "
                "the operator for a --data-dir")
    for where, value, keys in _walk({k: v for k, v in raw.items() if k != "root"}):
        last = keys[-1] if keys else ""
        if last in OUTPUT_KEYS or (last == "dry_run" and keys[:1] == ("publish",)):
            raise Refused(f"{where}: the service places every stage's output in the job's run folder; leave "
                          f"{last} out of the recipe")
        if last in CODE_KEYS and ":" in value and "://" not in value:
            raise Refused(f"{where}: {value!r} names Python code; a recipe sent to the service uses the built-in "
                          f"engines and rewards")
        if last not in INPUT_KEYS or not value.strip():
            continue
        path = Path(os.path.expanduser(value))
        if path.is_absolute():
            if not _inside(path.resolve(), allowed):
                raise Refused(f"{where}: {value} is outside the folders a recipe sent to the service may read "
                              f"(uploads, the bundled data, --data-dir folders); {where_to}")
        elif (last not in NAME_KEYS or not NAME.fullmatch(value) or ".." in value or (job_dir / value).exists()
              or Path(value).exists()):
            raise Refused(f"{where}: {value!r} is {'neither a model name nor ' if last in NAME_KEYS else 'not '}an "
                          f"absolute path; a recipe sent to the service names a file by its absolute path: "
                          f"{where_to}")


def _line(exc: BaseException, job_dir: Path) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, FileNotFoundError) and exc.filename:
        text = f"{exc.filename}: no such file or folder"
    return redact(text.replace(f"{job_dir}{os.sep}", ""))


def _is_refusal(exc: BaseException) -> bool:
    """The errors ``rlaif run`` shows as one line (rlaif/cli.py ``is_user_error``)."""
    from pydantic import ValidationError

    return type(exc).__module__.split(".")[0] in OUR_PACKAGES or isinstance(
        exc, ValidationError | FileNotFoundError | IsADirectoryError | NotADirectoryError | PermissionError)


def _raw_trees(text: str, overrides: list[str]) -> list[dict]:
    """The recipe text and each ``key=value`` override as parsed mappings, for the folder check before anything
    reads a file; what does not parse is left to ``load_pipeline``, which says what is wrong with it."""
    import yaml

    from plumbing import yamlfile

    trees = []
    for item in [text, *overrides]:
        key, sep, value = (None, "", item) if item is text else item.partition("=")
        try:
            parsed = yamlfile.load(value) if value.strip() else None
        except (yaml.YAMLError, yamlfile.YAMLLimitError):
            parsed = value if sep else None
        if sep:
            for part in reversed(key.strip().split(".")):
                parsed = {part: parsed}
        if isinstance(parsed, dict):
            trees.append(parsed)
    return trees


def check(text: str, overrides: list[str], job_dir: Path, allowed: list[Path]) -> Checked:
    """Write ``job_dir/recipe.yaml`` and check it as ``rlaif run recipe.yaml --set ... --root job_dir/run
    --dry-run`` would, after the folder policy (on the text before anything is read, and on the loaded recipe
    again); Refused with one line, else the job's name and plan."""
    from pipeline.loop import run_pipeline
    from pipeline.recipe import load_pipeline

    if ab_job.is_ab_recipe(text):  # a constitution A/B comparison (`kind: constitution-ab`), not a pipeline
        try:
            return Checked(*ab_job.check_ab(text, overrides, job_dir, allowed))
        except ab_job.ABRefused as e:
            raise Refused(str(e)) from None
    if redact(text) != text or any(redact(o) != o for o in overrides):
        raise Refused("the recipe holds a secret (a token, an API key or credentials in a URL); the service stores "
                      "none: give the service's environment the token (HF_TOKEN, RLAIF_OPENAI_API_KEY_FILE)")
    for tree in _raw_trees(text, overrides):
        check_paths(tree, job_dir, allowed)
    recipe_file = job_dir / "recipe.yaml"
    recipe_file.write_text(text, encoding="utf-8")
    try:
        with _DRY_RUN:
            recipe = load_pipeline(recipe_file, [*overrides, f"root={json.dumps(str(job_dir / 'run'))}"])
            check_paths(recipe.model_dump(mode="json"), job_dir, allowed)
            steps = run_pipeline(recipe, dry_run=True, say=lambda _line: None)
    except Refused:
        raise
    except Exception as e:
        if not _is_refusal(e):
            raise
        raise Refused(_line(e, job_dir)) from None
    return Checked(recipe.name, [{"stage": s.stage, "action": s.action, "why": s.why} for s in steps])
