"""Verifiable tasks as GRPO training data: ``rlaif data gsm8k`` and ``rlaif data mbpp`` turn a file of
problems into a run directory (plumbing/runs.py) that ``rlaif align grpo`` reads, with the column
its reward scores against:

- GSM8K (Cobbe et al., arXiv 2110.14168): rows ``question``, ``answer`` -> ``id, prompt, answer``;
  ``answer`` keeps the whole gold solution (``... #### 72``), which the ``gsm8k`` reward reads
  (align/rewards/gsm8k.py); stage ``data-gsm8k``.
- easy arithmetic (``rlaif data arithmetic``): generated ``a + b``, ``a - b`` and ``a x b`` problems with a
  seeded ``random.Random``, in GSM8K's row shape (gold ``"... #### <n>"``); stage ``data-arithmetic``.
- MBPP-style code problems (Austin et al., arXiv 2108.07732): rows ``text`` or ``prompt`` and
  ``test_list`` or ``tests`` (Python asserts; a non-empty ``test_setup_code`` runs first) ->
  ``id, prompt, tests``, scored by the ``code`` reward (align/rewards/code.py); stage ``data-code``.

The prompt of a math problem is the user turn rendered by ``prompts/tasks/final_answer.jinja`` (the
problem, then a request to end with ``#### <number>``, the form the ``gsm8k`` reward reads first;
``plain=True`` keeps the problem text unchanged); the template's hash is in the run's spec. A code
problem's prompt is its text, unchanged. Every row is checked before anything is
written: one bad row refuses the whole file with its row number and what to fix, so a run never
holds part of a file (tests/test_grpo.py). The id hashes the prompt and its gold, so a repeated
problem is kept once and a re-run on the same folder resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from plumbing.hashing import file_sha256, item_id
from plumbing.inputs import BadItem, InputError, read_rows
from plumbing.runs import RunWriter, iter_batches

BATCH = 500  # rows per shard


class TaskError(ValueError):
    """A task file cannot be imported; the message names the file, the row and the fix."""


def _features(kind: str):
    from datasets import Features, List, Value

    from generator.records import MESSAGES

    gold = {"code": {"tests": List(Value("string"))}}.get(kind, {"answer": Value("string")})
    return Features({"id": Value("string"), "prompt": MESSAGES, **gold})


FINAL_ANSWER = "tasks/final_answer.jinja"


def gsm8k_row(row: dict[str, Any], plain: bool = False) -> dict[str, Any]:
    """One GSM8K problem -> ``{id, prompt, answer}``; raises ValueError saying what is wrong."""
    from align.rewards.gsm8k import final_answer, parse_number

    question, answer = row.get("question"), row.get("answer")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"'question' must be non-empty text (got {_shown(question)})")
    if not isinstance(answer, str) or "####" not in answer:
        raise ValueError(f"'answer' must be GSM8K's solution text ending in '#### <number>' (got {_shown(answer)})")
    if parse_number(final_answer(answer) or "") is None:
        raise ValueError(f"'answer' has no number after '####' ({answer.rsplit('####', 1)[1].strip()[:40]!r})")
    from prompts import render

    text = question.strip() if plain else render(FINAL_ANSWER, None, question=question.strip())
    prompt = [{"role": "user", "content": text}]
    return {"id": item_id("gsm8k", prompt, answer), "prompt": prompt, "answer": answer}


def arithmetic_problems(count: int, seed: int = 0, max_operand: int = 20) -> list[dict[str, str]]:
    """``count`` distinct problems ``{question, answer}`` with operands in 0..max_operand: sums,
    differences that stay >= 0 and products, drawn by a ``random.Random(seed)`` (same seed, same list)."""
    import random

    if count < 1 or max_operand < 1:
        raise TaskError(f"--count and --max-operand must be at least 1 (got {count}, {max_operand})")
    distinct = 3 * (max_operand + 1) ** 2  # an upper bound; differences repeat some, so ask for at most half
    if count > distinct // 2:
        raise TaskError(f"--count {count}: at most {distinct // 2} distinct problems with --max-operand "
                        f"{max_operand}; raise --max-operand")
    rng, seen, out = random.Random(seed), set(), []
    while len(out) < count:
        a, b, op = rng.randint(0, max_operand), rng.randint(0, max_operand), rng.choice("+-x")
        if op == "-" and b > a:
            a, b = b, a
        value = a + b if op == "+" else a - b if op == "-" else a * b
        if (a, op, b) not in seen:
            seen.add((a, op, b))
            shown = "\u00d7" if op == "x" else op
            out.append({"question": f"What is {a} {shown} {b}?", "answer": f"{a} {shown} {b} = {value}\n#### {value}"})
    return out


def code_row(row: dict[str, Any]) -> dict[str, Any]:
    """One code problem -> ``{id, prompt, tests}``; raises ValueError saying what is wrong."""
    text_key = next((k for k in ("text", "prompt") if k in row), None)
    tests_key = next((k for k in ("test_list", "tests") if k in row), None)
    if text_key is None or tests_key is None:
        raise ValueError(f"needs 'text' or 'prompt' (the problem) and 'test_list' or 'tests' (Python asserts); "
                         f"it has {', '.join(map(str, row)) or 'no columns'}")
    text, tests = row[text_key], row[tests_key]
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"'{text_key}' must be non-empty text (got {_shown(text)})")
    tests = [tests] if isinstance(tests, str) else tests
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) and t.strip() for t in tests):
        raise ValueError(f"'{tests_key}' must be a non-empty list of Python assert lines (got {_shown(row[tests_key])})")
    setup = row.get("test_setup_code")
    if isinstance(setup, str) and setup.strip():
        tests = [setup, *tests]
    prompt = [{"role": "user", "content": text.strip()}]
    return {"id": item_id("code", prompt, tests), "prompt": prompt, "tests": tests}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


KINDS: dict[str, tuple[str, Callable[..., dict]]] = {"gsm8k": ("data-gsm8k", gsm8k_row),
                                                      "arithmetic": ("data-arithmetic", gsm8k_row),
                                                      "code": ("data-code", code_row)}


def read_task_rows(path: str | Path, kind: str, limit: int | None = None,
                   plain: bool = False) -> list[dict[str, Any]]:
    """Every row of ``path`` (the first ``limit``) converted, or a TaskError for the first bad one."""
    if limit is not None and limit < 1:
        raise TaskError(f"--limit must be at least 1 (got {limit})")
    convert = KINDS[kind][1] if kind == "code" else partial(gsm8k_row, plain=plain)
    rows: list[dict[str, Any]] = []
    try:
        for index, row in enumerate(read_rows(path)):
            if limit is not None and index >= limit:
                break
            if isinstance(row, BadItem):
                raise TaskError(f"{path}: {row.reason}; fix or remove that line")
            try:
                rows.append(convert(row))
            except ValueError as e:
                raise TaskError(f"{path} row {index + 1}: {e}; fix or remove that row") from None
    except InputError as e:
        raise TaskError(str(e)) from None
    if not rows:
        raise TaskError(f"{path}: no rows; give a file with {'problems' if kind == 'code' else 'GSM8K rows'}")
    return rows


def import_task(path: str | Path, out: str | Path, kind: str, limit: int | None = None,
                overwrite: bool = False, plain: bool = False) -> dict[str, int]:
    """Check every row of ``path``, then write them to the run directory ``out``; returns its counts."""
    from plumbing.runs import check_out_dir

    check_out_dir(out, KINDS[kind][0], overwrite=overwrite)  # a folder we may not write is refused before reading
    rows = read_task_rows(path, kind, limit, plain)
    spec = {"source": Path(path).name, "source_sha256": file_sha256(path), "limit": limit, "kind": kind,
            **_template_spec(kind, plain)}
    return _write(out, kind, spec, rows, overwrite)


def make_arithmetic(out: str | Path, count: int = 64, seed: int = 0, max_operand: int = 20,
                    overwrite: bool = False, plain: bool = False) -> dict[str, int]:
    """Write ``count`` generated arithmetic problems (``arithmetic_problems``) to the run directory ``out``."""
    from plumbing.runs import check_out_dir

    problems = arithmetic_problems(count, seed, max_operand)  # bad numbers are refused before the folder is looked at
    check_out_dir(out, KINDS["arithmetic"][0], overwrite=overwrite)
    rows = [gsm8k_row(p, plain=plain) for p in problems]
    spec = {"kind": "arithmetic", "count": count, "seed": seed, "max_operand": max_operand,
            **_template_spec("arithmetic", plain)}
    return _write(out, "arithmetic", spec, rows, overwrite)


def _template_spec(kind: str, plain: bool) -> dict[str, Any]:
    from prompts import template_sha256

    if kind == "code" or plain:
        return {"template": None}
    return {"template": FINAL_ANSWER, "template_sha256": template_sha256([FINAL_ANSWER])}


def _write(out: str | Path, kind: str, spec: dict[str, Any], rows: list[dict[str, Any]],
           overwrite: bool) -> dict[str, int]:
    writer = RunWriter(out, KINDS[kind][0], spec, _features(kind), overwrite=overwrite)
    try:
        for batch in iter_batches(rows, BATCH):
            writer.write(batch)
    except BaseException:
        writer.close()  # the run stays resumable: a re-run writes the rows it lacks
        raise
    return writer.finish({"duplicates": len(rows) - len({r["id"] for r in rows})})
