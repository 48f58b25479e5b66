"""PPO prompts: any prompt file `rlaif generate` reads (plumbing/inputs.py: jsonl/json/parquet/csv,
optionally .gz, text, chat messages or HH-RLHF transcripts), or a run directory with a ``prompt``
column (generate, judge, revise, ``rlaif data`` runs). A prompt that appears in several rows of a run
(a judge run holds several pairs per prompt) is kept once. The other columns of each row travel
with it to the reward functions (``f(prompts, completions, **columns)``), and each reward function
is tried on the first row before any model loads, so a missing column is one line.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

from align.data import AlignData
from plumbing.recipes import RecipeError

log = logging.getLogger(__name__)


def load_prompts(recipe) -> AlignData:
    """Train (and held-out) prompts of ``recipe.data``: rows ``{"prompt": messages, **columns}``."""
    src = recipe.data
    path = Path(src.path).expanduser()
    if not path.exists():
        raise RecipeError(f"data.path (--prompts) {path}: no such prompt file or run directory")
    if path.is_dir():
        train, evals, stage, prov = _from_run(path, src)
    else:
        if src.eval_split:
            raise RecipeError(f"data.eval_split {src.eval_split!r}: a prompt file has one split; use eval_ratio")
        train, evals, stage, prov = _from_file(path), None, None, {}
    if not train:
        raise RecipeError(f"data.path (--prompts) {path}: no usable prompt in split {src.split!r}")
    _probe_rewards(recipe.reward_funcs, train[0], path)
    if evals is None and src.eval_ratio > 0:
        order = list(range(len(train)))
        random.Random(recipe.seed).shuffle(order)
        n_eval = max(1, int(len(train) * src.eval_ratio))
        held = set(order[:n_eval])
        evals = [r for i, r in enumerate(train) if i in held]
        train = [r for i, r in enumerate(train) if i not in held]
    if src.max_rows:
        train = train[: src.max_rows]
    log.info("prompts %s: %d train, %d held out", path, len(train), len(evals or []))
    return AlignData(train=train, eval=evals or None, source=str(path), stage=stage, provenance=prov)


def _from_file(path: Path) -> list[dict[str, Any]]:
    from plumbing.inputs import BadItem, InputError, read_prompts, read_rows, require_usable

    try:
        items = list(read_prompts(path))
        require_usable(path, items)
        rows = [r for r in read_rows(path)]
    except InputError as e:
        raise RecipeError(f"data.path (--prompts) {e}") from None
    out = []
    for item in items:
        if isinstance(item, BadItem):
            log.warning("skipping a prompt of %s: %s", path, item.reason)
            continue
        row = rows[item.index] if item.index < len(rows) and isinstance(rows[item.index], dict) else {}
        columns = {k: v for k, v in row.items() if k not in ("prompt", "messages", "chosen", "rejected")}
        out.append({**columns, "prompt": item.messages})
    return out


def _from_run(path: Path, src) -> tuple[list, list | None, str | None, dict]:
    from align.data import load_splits
    from plumbing.inputs import to_messages
    from plumbing.runs import RunError, read_manifest

    try:
        manifest = read_manifest(path)
        train, evals = load_splits(path, src)
    except RunError as e:
        raise RecipeError(f"data.path (--prompts): {e}") from None
    stage = manifest.get("stage")
    if "prompt" not in train.column_names:
        raise RecipeError(f"data.path (--prompts) {path}: a {stage!r} run without a 'prompt' column (it has: "
                          f"{', '.join(train.column_names)}); give a prompt file or a generate/judge/revise run")
    keep = [c for c in train.column_names if c not in ("chosen", "rejected", "votes", "messages", "responses")]
    prov: dict[str, Any] = {"run_stage": stage, "run_spec_sha256": manifest.get("spec_sha256"),
                            "run_counts": manifest.get("counts")}
    if "constitution_sha256" in train.column_names:
        prov["constitution_sha256"] = sorted({v for v in train["constitution_sha256"] if v})

    def rows(ds) -> list[dict]:
        seen, out = set(), []
        for row in ds.select_columns(keep):
            try:
                messages = to_messages(row["prompt"])
            except TypeError:
                continue
            key = json.dumps(messages, sort_keys=True)
            if messages and key not in seen:
                seen.add(key)
                out.append({**row, "prompt": messages})
        return out

    return rows(train), (rows(evals) if evals is not None else None), stage, prov


def _probe_rewards(names: list[str], row: dict[str, Any], path: Path) -> None:
    from align.rewards import get_reward

    columns = {k: [v] for k, v in row.items() if k != "prompt"}
    for name in names:
        try:
            scores = list(get_reward(name)([row["prompt"]], [[{"role": "assistant", "content": ""}]], **columns))
        except (KeyError, ValueError, TypeError) as e:
            raise RecipeError(f"reward {name!r} cannot score the prompts of {path}: "
                              f"{' '.join(str(e.args[0] if e.args else e).split())}") from None
        if len(scores) != 1:
            raise RecipeError(f"reward {name!r} returned {len(scores)} scores for 1 completion; it must return "
                              f"one score (or None) per completion")
