"""Training data for align methods: a run directory or a dataset file, checked before any model loads.

A run directory's ``manifest.json`` says which stage wrote it; SFT needs a ``revise`` run
(``messages``), reward models and DPO a ``judge`` run (``prompt``, ``chosen``, ``rejected``,
``p_chosen``). A dataset file (.jsonl/.json/.parquet, optionally from elsewhere) is accepted when it
has the columns. Only the columns the trainer reads are kept, so TRL never sees nested
provenance columns (votes) it does not need; provenance is summarised for the model card.

``eval_ratio`` holds out whole prompts (by ``plumbing.hashing.prompt_id``), never single rows: a
run made with ``rlaif generate --n`` above 2 holds several pairs per prompt, and a prompt with pairs
on both sides would leak its eval pairs into training.

GRPO reads prompts (``load_grpo_data``): any run or file with a ``prompt`` column, with the columns its rewards
read, each reward tried on the first row so a missing column is one line before any model loads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from plumbing.recipes import RecipeError

log = logging.getLogger(__name__)

# method kind -> (stage of a run that can feed it, columns the trainer needs)
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sft": ("revise", ("messages",)),
    "preferences": ("judge", ("prompt", "chosen", "rejected")),
}
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


class DataSource(BaseModel):
    """Where the training rows come from and how the held-out rows are chosen."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    path: str = Field(description="A run directory written by `rlaif revise`/`rlaif judge` (it has "
                                  "manifest.json), or a dataset file: .jsonl, .json or .parquet.")
    split: str = Field("train", description="Split of the run used for training.")
    eval_split: str | None = Field(None, description="Split of the run held out for evaluation (e.g. `test`).")
    eval_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction of the training rows held out for "
                              "evaluation when no eval_split is given; 0 = no evaluation.")
    max_rows: int | None = Field(None, gt=0, description="Use at most this many training rows (smoke runs).")


@dataclass
class AlignData:
    """Training rows, optional held-out rows, and where they came from (for the model card)."""

    train: Any  # datasets.Dataset
    eval: Any | None
    source: str
    stage: str | None
    provenance: dict[str, Any] = field(default_factory=dict)


def _read_file(path: Path):
    import datasets
    from datasets import Dataset

    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a "Generating train split" bar is noise before a one-line error
    try:
        if name.endswith(".parquet"):
            return Dataset.from_parquet(str(path), keep_in_memory=True)
        if name.endswith((".jsonl", ".json")):
            return Dataset.from_json(str(path), keep_in_memory=True)
    except Exception as e:  # noqa: BLE001 - datasets raises many types for a bad file
        raise RecipeError(f"data.path {path}: cannot read it as a dataset ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:200]})") from None
    finally:
        if bars:
            datasets.enable_progress_bars()
    raise RecipeError(f"data.path {path}: unknown file type; give a run directory or a "
                      f"{'/'.join(FILE_SUFFIXES)} file")


def load_splits(path: Path, src: DataSource):
    """(train, eval or None) of a run directory, the splits ``src`` names; a missing split is one line."""
    from plumbing.runs import load, splits

    known = splits(path)
    for name in filter(None, (src.split, src.eval_split)):
        if name not in known:
            raise RecipeError(f"data.path {path} has no split {name!r}; it has: {', '.join(known) or 'no rows'}")
    return load(path, src.split), (load(path, src.eval_split) if src.eval_split else None)


def _read_run(path: Path, kind: str, src: DataSource, method: str):
    from plumbing.runs import RunError, read_manifest

    try:
        manifest = read_manifest(path)
    except RunError as e:
        raise RecipeError(f"data.path: {e}") from None
    stage = manifest.get("stage")
    want = KINDS[kind][0]
    if stage != want:
        raise RecipeError(f"data.path {path} is a {stage!r} run; `rlaif align {method}` needs a {want!r} run "
                          f"(the --out folder of `rlaif {want}`)")
    train, evals = load_splits(path, src)
    prov = {"run_stage": stage, "run_spec_sha256": manifest.get("spec_sha256"),
            "run_status": manifest.get("status"), "run_counts": manifest.get("counts")}
    spec = manifest.get("spec") or {}
    for key in ("constitution_sha256", "model", "judge_model"):
        if isinstance(spec.get(key), str):
            prov[f"spec_{key}"] = spec[key]
    return train, evals, stage, prov


def _check_columns(ds, need: tuple[str, ...], where: str, hint: str) -> None:
    missing = [c for c in need if c not in ds.column_names]
    if missing:
        raise RecipeError(f"{where}: column(s) {', '.join(missing)} missing (it has: "
                          f"{', '.join(ds.column_names)}); {hint}")


def _summarise(ds) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for col in ("constitution_sha256", "judge_model", "model", "template_sha256"):
        if col in ds.column_names:
            out[col] = sorted({v for v in ds[col] if v})
    if "p_chosen" in ds.column_names and len(ds):
        ps = [p for p in ds["p_chosen"] if p is not None]
        out["p_chosen_mean"] = round(sum(ps) / max(len(ps), 1), 4)
    return out


def load_data(src: DataSource, method: str, *, soft_labels: bool = False, seed: int = 0) -> AlignData:
    """Read, check and split the data of ``method`` (sft / reward / dpo); raises RecipeError."""
    kind = "sft" if method == "sft" else "preferences"
    path = Path(src.path)
    if not path.exists():
        raise RecipeError(f"data.path {path}: no such run directory or dataset file")
    need = KINDS[kind][1] + (("p_chosen",) if soft_labels else ())
    if path.is_dir():
        train, evals, stage, prov = _read_run(path, kind, src, method)
    else:
        if src.eval_split:
            raise RecipeError(f"data.eval_split {src.eval_split!r}: a dataset file has one split; use eval_ratio")
        train, evals, stage, prov = _read_file(path), None, None, {}
    hint = ("soft_labels needs the judge's p_chosen; set soft_labels: false or use a `rlaif judge` run"
            if soft_labels and "p_chosen" not in train.column_names else
            f"`rlaif align {method}` reads {', '.join(KINDS[kind][1])}")
    _check_columns(train, need, f"data.path {path}", hint)
    if evals is not None:
        _check_columns(evals, need, f"data.eval_split {src.eval_split}", hint)
    if len(train) == 0:
        raise RecipeError(f"data.path {path}: split {src.split!r} has no rows")
    prov.update(_summarise(train))
    if src.max_rows:
        train = train.select(range(min(src.max_rows, len(train))))
    if evals is None and src.eval_ratio > 0:
        train, evals = _hold_out_prompts(train, src.eval_ratio, seed)
    keep = list(need)
    train = train.select_columns(keep)
    evals = evals.select_columns(keep) if evals is not None else None
    if soft_labels:
        _check_p_chosen(train, path)
    log.info("data %s: %d train rows, %d eval rows", path, len(train), len(evals) if evals is not None else 0)
    return AlignData(train=train, eval=evals, source=str(path), stage=stage, provenance=prov)


def _prompt_keys(ds) -> list[str]:
    """The prompt id of each row: its ``prompt``, else (SFT rows) the conversation before the final reply."""
    from plumbing.hashing import prompt_id

    if "prompt" in ds.column_names:
        return [prompt_id(p) for p in ds["prompt"]]
    return [prompt_id(m[:-1]) for m in ds["messages"]]


def _hold_out_prompts(train, ratio: float, seed: int):
    """(train, eval) with whole prompts held out: prompts ranked by ``hash_fraction(prompt_id, seed)``
    go to eval until they hold ``round(len * ratio)`` rows (at least 1), so every pair of a prompt is on
    one side (tests/test_align_data.py::test_eval_ratio_holds_out_whole_prompts)."""
    from collections import Counter

    from plumbing.hashing import hash_fraction

    keys = _prompt_keys(train)
    sizes = Counter(keys)
    n_eval = max(1, round(len(train) * ratio))
    held, rows = set(), 0
    for key in sorted(sizes, key=lambda k: (hash_fraction(k, seed), k)):
        if rows >= n_eval:
            break
        held.add(key)
        rows += sizes[key]
    if rows >= len(train):
        raise RecipeError(f"data.eval_ratio {ratio}: the {len(train)} training rows hold {len(sizes)} prompt(s); "
                          f"holding out whole prompts leaves no training rows; lower eval_ratio or add prompts")
    mask = [k in held for k in keys]
    return (train.select([i for i, m in enumerate(mask) if not m]),
            train.select([i for i, m in enumerate(mask) if m]))


def _check_p_chosen(ds, path: Path) -> None:
    bad = [i for i, p in enumerate(ds["p_chosen"]) if p is None or not 0.0 <= p <= 1.0]
    if bad:
        raise RecipeError(f"data.path {path}: p_chosen missing or outside [0, 1] in {len(bad)} rows "
                          f"(first at row {bad[0]}); drop them or set soft_labels: false")


def recipe_data(recipe) -> AlignData:
    """The training rows of an sft, reward or dpo recipe (``load_data`` with the recipe's settings)."""
    return load_data(recipe.data, recipe.method, soft_labels=getattr(recipe, "soft_labels", False), seed=recipe.seed)


# --- GRPO: prompts with the columns its rewards read ---------------------------------------------------------

def _read_prompt_source(path: Path, src) -> tuple[Any, Any, str | None, dict[str, Any]]:
    from plumbing.runs import RunError, read_manifest

    if not path.is_dir():
        if src.eval_split:
            raise RecipeError(f"data.eval_split {src.eval_split!r}: a dataset file has one split; use eval_ratio")
        return _read_file(path), None, None, {}
    try:
        manifest = read_manifest(path)
        train, evals = load_splits(path, src)
    except RunError as e:
        raise RecipeError(f"data.path: {e}") from None
    prov = {"run_stage": manifest.get("stage"), "run_spec_sha256": manifest.get("spec_sha256"),
            "run_counts": manifest.get("counts")}
    return train, evals, manifest.get("stage"), prov


def load_grpo_data(recipe) -> AlignData:
    """Prompts (a ``prompt`` column: text or chat messages) with the columns the rewards read, from a
    run directory (``rlaif data gsm8k|mbpp``, or any run with prompts) or a dataset file; each reward
    is tried on the first row (an empty completion) so a missing column fails here, before any
    model loads (tests/test_grpo.py::test_bad_grpo_recipes_fail_in_one_line_before_the_model, `--reward code`)."""
    src = recipe.data
    path = Path(src.path)
    if not path.exists():
        raise RecipeError(f"data.path {path}: no such run directory or dataset file")
    train, evals, stage, prov = _read_prompt_source(path, src)
    for ds, where in ((train, f"data.path {path}"), (evals, f"data.eval_split {src.eval_split}")):
        if ds is not None and "prompt" not in ds.column_names:
            raise RecipeError(f"{where}: no 'prompt' column (it has: {', '.join(ds.column_names)}); "
                              f"`rlaif align grpo` samples completions for each prompt (see `rlaif data gsm8k --help`)")
    if len(train) == 0:
        raise RecipeError(f"data.path {path}: split {src.split!r} has no rows")
    _probe_grpo_rewards([n for n in recipe.reward_funcs if n != "judge"], train[0], path)
    if "judge" in recipe.reward_funcs:
        try:
            recipe.judge.load_constitution()
        except (ValueError, OSError) as e:
            raise RecipeError(f"judge.constitution: {' '.join(str(e).split())}") from None
    if src.max_rows:
        train = train.select(range(min(src.max_rows, len(train))))
    if evals is None and src.eval_ratio > 0:
        train, evals = _hold_out_prompts(train, src.eval_ratio, recipe.seed)
    log.info("data %s: %d prompts, %d held out", path, len(train), len(evals) if evals is not None else 0)
    return AlignData(train=train, eval=evals, source=str(path), stage=stage, provenance=prov)


def _probe_grpo_rewards(names: list[str], row: dict[str, Any], path: Path) -> None:
    from align.rewards import get_reward

    prompt = row["prompt"]
    completion = "" if isinstance(prompt, str) else [{"role": "assistant", "content": ""}]
    columns = {k: [v] for k, v in row.items() if k != "prompt"}
    for name in names:
        try:
            scores = get_reward(name)([prompt], [completion], **columns)
        except (KeyError, ValueError, TypeError) as e:
            raise RecipeError(f"reward {name!r} cannot score the rows of {path}: "
                              f"{' '.join(str(e.args[0] if e.args else e).split())}") from None
        if len(list(scores)) != 1:
            raise RecipeError(f"reward {name!r} returned {len(list(scores))} scores for 1 completion; "
                              f"it must return one score (or None) per completion")
