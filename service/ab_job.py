"""A job that is an ``rlaif constitution ab`` command rather than a pipeline recipe.

The playground's "Compare" is a service job like any other (queued, run as its own process group, cancelled,
retried, its log streamed), so closing the page changes nothing. Its recipe is YAML of its own kind::

    kind: constitution-ab
    name: playground compare
    old: /abs/constitution-a.yaml        # absolute paths, each inside a folder a recipe may read
    new: /abs/constitution-b.yaml
    human: /abs/labelled-pairs.jsonl     # HH-RLHF rows (judge/ab.py ``read_labelled_pairs``)
    limit: 32
    judge: {model: smollm2-135m, engine: auto, principles_per_pair: 4, seed: 0}

``check_ab`` refuses what ``service/recipes.py`` refuses of a pipeline recipe (a secret, a path outside the
uploads, the bundled data and the --data-dir folders, user code named as ``module:attr``), then loads both
constitutions and the labelled pairs as ``rlaif constitution ab`` would, before any model loads, so a bad input
is one line at submit time; the job's plan is one stage, ``ab``. ``ab_arguments`` is the command the job runs:
``rlaif constitution ab OLD NEW --human H --out <job>/run/ab --overwrite ...`` (``--overwrite`` replaces only an
earlier ab output there, so a retried job re-writes its report and reuses its vote cache).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

KIND = "constitution-ab"
STAGE = "ab"  # the plan's one stage; <job>/run/ab holds report.md, metrics.json, flips.jsonl and the plots
RECIPE = "recipe.yaml"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")  # a model name or a Hub id


class ABRefused(ValueError):
    """The A/B recipe cannot be queued; the message is one line for the user."""


class ABJudge(BaseModel):
    """The judge options ``rlaif constitution ab`` takes."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field("smollm2-135m", description="Judge model: the embedded name, a Hub id or an absolute path.")
    engine: str = Field("auto", description="auto | vllm | openai | transformers | fake (built-in engines only).")
    base_urls: list[str] = Field(default_factory=list, description="OpenAI-compatible servers (engine openai).")
    principles_per_pair: int = Field(4, ge=1, le=64, description="Principles drawn per pair.")
    layout: Literal["cai", "shared-prefix"] | None = Field(None, description="Judge prompt layout.")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of the principle draws and of the bootstrap.")
    batch_size: int = Field(32, ge=1, le=4096, description="Pairs per engine call (runtime only).")
    templates: str | None = Field(None, description="Folder of .jinja files shadowing the built-in prompts.")


class ABRecipe(BaseModel):
    """An A/B job's recipe (module docstring)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["constitution-ab"]
    name: str = Field("constitution A/B", min_length=1, max_length=200)
    old: str = Field(description="Constitution A, the one in use (absolute path).")
    new: str = Field(description="Constitution B, the edited one (absolute path).")
    human: str = Field(description="Labelled pairs (absolute path).")
    limit: int | None = Field(None, ge=1, description="Judge at most this many pairs (the first ones).")
    principles: list[str] | None = Field(None, description="Judge with these principle ids only.")
    judge: ABJudge = Field(default_factory=ABJudge)


def is_ab_recipe(text: str) -> bool:
    """Does the recipe text declare ``kind: constitution-ab``? (Cheap: a line of the text, no parse.)"""
    return re.search(rf"(?m)^kind:\s*['\"]?{re.escape(KIND)}['\"]?\s*(#.*)?$", text) is not None


def _one_line(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{where}: {str(first.get('msg', 'invalid')).removeprefix('Value error, ')}{more}"


def parse(text: str) -> ABRecipe:
    import yaml

    from plumbing import yamlfile

    try:
        raw = yamlfile.load(text)
    except (yaml.YAMLError, yamlfile.YAMLLimitError) as e:
        raise ABRefused(f"{RECIPE}: not YAML ({' '.join(str(e).split())[:200]})") from None
    if not isinstance(raw, dict):
        raise ABRefused(f"{RECIPE}: an A/B recipe is a mapping (kind, old, new, human, judge)")
    try:
        return ABRecipe.model_validate(raw)
    except ValidationError as e:
        raise ABRefused(f"{RECIPE}: {_one_line(e)}") from None


def _inside(path: Path, folders: list[Path]) -> bool:
    return any(path == f or path.is_relative_to(f) for f in folders)


def check_paths(recipe: ABRecipe, allowed: list[Path]) -> None:
    """Every file the job reads lies in an allowed folder; the engine is a built-in one."""
    how = ("upload the file (POST /api/v1/uploads) and name the path it gets, use the bundled data, or ask the "
           "operator for a --data-dir")
    files = {"old": recipe.old, "new": recipe.new, "human": recipe.human, "judge.templates": recipe.judge.templates}
    for where, value in files.items():
        if value is None:
            continue
        path = Path(os.path.expanduser(value))
        if not path.is_absolute():
            raise ABRefused(f"{where}: {value!r} is not an absolute path; {how}")
        if not _inside(path.resolve(), allowed):
            raise ABRefused(f"{where}: {value} is outside the folders a recipe sent to the service may read; {how}")
    model = recipe.judge.model
    if Path(model).is_absolute():
        if not _inside(Path(model).resolve(), allowed):
            raise ABRefused(f"judge.model: {model} is outside the folders a recipe sent to the service may read")
    elif not NAME.fullmatch(model) or ".." in model:
        raise ABRefused(f"judge.model: {model!r} is neither a model name, a Hub id nor an absolute path")
    if ":" in recipe.judge.engine:
        raise ABRefused(f"judge.engine: {recipe.judge.engine!r} names Python code; a recipe sent to the service uses "
                        "the built-in engines")


def ab_config(recipe: ABRecipe, out: Path):
    from judge.ab import ABConfig
    from judge.config import JudgeConfig

    j = recipe.judge
    try:
        judge = JudgeConfig(model=j.model, engine=j.engine, base_urls=j.base_urls, seed=j.seed, layout=j.layout,
                            principles_per_pair=j.principles_per_pair, batch_size=j.batch_size, templates=j.templates)
        return ABConfig(old=Path(recipe.old), new=Path(recipe.new), human=Path(recipe.human), out=out,
                        overwrite=True, limit=recipe.limit, principles=recipe.principles, judge=judge)
    except ValidationError as e:
        raise ABRefused(f"{RECIPE}: {_one_line(e)}") from None


def _is_refusal(exc: BaseException) -> bool:
    from plumbing.capture import OUR_PACKAGES

    return type(exc).__module__.split(".")[0] in OUR_PACKAGES or isinstance(exc, OSError | ValueError)


def check_ab(text: str, overrides: list[str], job_dir: Path, allowed: list[Path]) -> tuple[str, list[dict]]:
    """Check an A/B recipe as ``rlaif constitution ab`` would before loading a model, and write it to
    ``job_dir/recipe.yaml``; ABRefused with one line, else the job's name and plan."""
    from judge.ab import load_both, read_labelled_pairs
    from plumbing.capture import redact

    if redact(text) != text:
        raise ABRefused("the recipe holds a secret (a token, an API key or credentials in a URL); the service "
                        "stores none: give the service's environment the key (RLAIF_OPENAI_API_KEY_FILE)")
    if overrides:
        raise ABRefused("an A/B job takes no overrides; edit its recipe instead")
    recipe = parse(text)
    check_paths(recipe, allowed)
    config = ab_config(recipe, job_dir / "run" / STAGE)
    try:
        a, b, _ids = load_both(config)
        human, label = read_labelled_pairs(config.human, config.limit)
    except Exception as e:
        if not _is_refusal(e):
            raise
        raise ABRefused(" ".join(str(e).split()) or type(e).__name__) from None
    (job_dir / RECIPE).write_text(text, encoding="utf-8")
    why = (f"{len(human.pairs)} labelled pairs (label: {label}) judged by {recipe.judge.model} "
           f"({recipe.judge.engine} engine) under {a.name} v{a.version} (A) and {b.name} v{b.version} (B)")
    return recipe.name, [{"stage": STAGE, "action": "run", "why": why}]


def ab_arguments(job_dir: Path) -> list[str]:
    """The ``rlaif`` arguments of the job whose checked recipe is ``job_dir/recipe.yaml``."""
    recipe = parse((job_dir / RECIPE).read_text(encoding="utf-8"))
    j = recipe.judge
    args = ["constitution", "ab", recipe.old, recipe.new, "--human", recipe.human,
            "--out", str(job_dir / "run" / STAGE), "--overwrite", "--model", j.model, "--engine", j.engine,
            "--principles-per-pair", str(j.principles_per_pair), "--seed", str(j.seed),
            "--batch-size", str(j.batch_size)]
    for url in j.base_urls:
        args += ["--base-url", url]
    for flag, value in (("--limit", recipe.limit), ("--layout", j.layout), ("--templates", j.templates),
                        ("--principles", ",".join(recipe.principles) if recipe.principles else None)):
        if value is not None:
            args += [flag, str(value)]
    return args


def recipe_text(name: str, old: Path, new: Path, human: Path, limit: int | None, judge: dict) -> str:
    """An A/B recipe's YAML (what the playground submits)."""
    import yaml

    data = {"kind": KIND, "name": name, "old": str(old), "new": str(new), "human": str(human)}
    if limit is not None:
        data["limit"] = limit
    try:
        data["judge"] = ABJudge.model_validate(judge).model_dump(exclude_defaults=True)
    except ValidationError as e:
        raise ABRefused(f"judge.{_one_line(e)}") from None
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
