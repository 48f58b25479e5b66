"""The inputs of ``rlaif eval`` (evaluation/evaluate.py): the prompts with their gold answers, and the cache of
generated responses kept in the eval run directory.

Prompts come from a prompt file (plumbing/inputs.py formats; an optional ``answer`` column) or from a run
directory with ``prompt`` (and ``answer``) columns, such as the output of ``rlaif data gsm8k``
(tasks/build.py). The responses of each model are cached in ``responses/<role>-NNNNN.jsonl``, one file
per batch, each written atomically: a resumed eval regenerates nothing it has.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from plumbing import atomic

RESPONSES = "responses"


class EvalError(ValueError):
    """The evaluation cannot run as asked; the message says how to fix it."""


@dataclass(frozen=True)
class EvalItem:
    id: str
    messages: list[dict]
    answer: str | None


@dataclass
class EvalInput:
    items: list[EvalItem]
    bad: list[tuple[str, str]]  # (id, reason)
    sha256: str  # the file's content hash, or the input run's spec hash


# --- input ----------------------------------------------------------------------------------------


def read_input(config) -> EvalInput:
    """Every prompt (and gold answer), read and checked before any folder or model is touched."""
    from plumbing.inputs import InputError

    path = config.prompts
    try:
        inp = _read_run(path, config.limit) if path.is_dir() and (path / "manifest.json").is_file() \
            else _read_file(config)
    except InputError as e:
        raise EvalError(str(e)) from None
    if not inp.items:
        first = f" (first: {inp.bad[0][1]})" if inp.bad else ""
        raise EvalError(f"--prompts {path}: no usable prompt{first}; give a file with a prompt column")
    return inp


def _read_file(config) -> EvalInput:
    from plumbing.hashing import file_sha256
    from plumbing.inputs import BadItem, read_prompts, read_rows

    answers: dict[int, str | None] = {}
    for index, row in enumerate(read_rows(config.prompts)):
        if config.limit is not None and index >= config.limit:
            break
        if isinstance(row, dict) and row.get("answer") is not None:
            answers[index] = str(row["answer"])
    items, bad = [], []
    for it in read_prompts(config.prompts, config.prompt_column, config.limit):
        if isinstance(it, BadItem):
            bad.append((it.id, it.reason))
        else:
            items.append(EvalItem(it.id, it.messages, answers.get(it.index)))
    return EvalInput(items, bad, file_sha256(config.prompts))


def _read_run(path: Path, limit: int | None) -> EvalInput:
    from plumbing.inputs import to_messages
    from plumbing.runs import load, read_manifest

    manifest = read_manifest(path)
    ds = load(path)
    if "prompt" not in ds.column_names:
        raise EvalError(f"--prompts {path}: the {manifest.get('stage')!r} run has no 'prompt' column; give a prompt "
                        f"file or a run made by `rlaif data gsm8k`")
    rows = ds.select(range(min(limit or len(ds), len(ds))))
    items = [EvalItem(r["id"], to_messages(r["prompt"]), r.get("answer")) for r in rows]
    return EvalInput(items, [], manifest.get("spec_sha256", ""))


def read_cache(run_dir: Path, role: str) -> dict[str, dict]:
    """``id -> {"text", "num_tokens", "finish_reason"}`` (or ``{"error"}``) from the role's batch files."""
    out: dict[str, dict] = {}
    for f in sorted((run_dir / RESPONSES).glob(f"{role}-*.jsonl")):
        for line in f.read_text().splitlines():
            record = json.loads(line)
            out[record["id"]] = record
    return out


def write_cache(run_dir: Path, role: str, records: list[dict]) -> None:
    folder = run_dir / RESPONSES
    folder.mkdir(exist_ok=True)
    n = len(list(folder.glob(f"{role}-*.jsonl")))
    atomic.write_text(folder / f"{role}-{n:05d}.jsonl", "".join(json.dumps(r) + "\n" for r in records))
