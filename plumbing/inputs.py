"""Reading prompt files: jsonl/json/parquet/csv (optionally .gz), prompts as text, chat
messages, or HH-RLHF transcripts.

A row yields a ``PromptItem`` (id + chat messages) or a ``BadItem`` (id + reason): bad rows
go to the run's errors.jsonl and the run goes on. HH-RLHF rows (``"\\n\\nHuman: ...\\n\\nAssistant:
..."``) give the conversation up to the last assistant turn as the prompt.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from plumbing.runs import item_id

SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")
# Columns tried in order when --prompt-column is not given.
PROMPT_COLUMNS = ("prompt", "messages", "question", "instruction", "chosen")
# Python's json decoder recurses once per nesting level and stops at the interpreter's recursion limit
# (about 1,000): deeper JSON is no data a prompt file holds, and is refused as such.
_TOO_DEEP = "JSON nested too deeply (past Python's recursion limit of about 1,000 levels); is it the right file?"


class InputError(ValueError):
    """The prompt file cannot be read at all (missing, unknown format, no usable column)."""


@dataclass(frozen=True)
class PromptItem:
    id: str
    messages: list[dict]
    index: int


@dataclass(frozen=True)
class BadItem:
    id: str
    reason: str
    index: int


def hh_split(transcript: str) -> tuple[list[dict], str]:
    """HH-RLHF transcript -> (conversation before the last assistant turn, last assistant reply).

    >>> hh_split("\\n\\nHuman: hi\\n\\nAssistant: hello\\n\\nHuman: bye\\n\\nAssistant: ciao")
    ([{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'hello'}, {'role': 'user', 'content': 'bye'}], 'ciao')
    """
    messages = hh_messages(transcript)
    if not messages or messages[-1]["role"] != "assistant":
        return messages, ""
    return messages[:-1], messages[-1]["content"]


def hh_messages(transcript: str) -> list[dict]:
    parts = _TURN.split(transcript)
    messages = []
    for speaker, text in zip(parts[1::2], parts[2::2], strict=True):
        messages.append({"role": "user" if speaker == "Human" else "assistant", "content": text.strip()})
    return messages


def is_hh_transcript(text: str) -> bool:
    return isinstance(text, str) and bool(re.match(r"\s*Human:", text)) and "Assistant:" in text


def _open_text(path: Path) -> io.TextIOBase:
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8", errors="strict")


def _format(path: Path) -> str:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return suffix[1:]
    raise InputError(f"{path}: unknown file type; use one of {', '.join(SUFFIXES)} (optionally .gz)")


def read_rows(path: str | Path) -> Iterator[dict | BadItem]:
    """Rows of a data file as dicts; an undecodable jsonl line yields a ``BadItem`` instead."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: {_folder_kind(path)}; give a data file ({', '.join(SUFFIXES)}, optionally .gz)")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    fmt = _format(path)
    try:
        if fmt == "parquet":
            yield from _read_parquet(path)
        elif fmt == "csv":
            with _open_text(path) as f:
                yield from csv.DictReader(f)
        elif fmt == "json":
            with _open_text(path) as f:
                data = json.load(f)
            if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
                data = next(iter(data.values()))  # {"data": [...]} / {"train": [...]}
            if not isinstance(data, list):
                raise InputError(f"{path}: a .json file must hold a list of objects")
            for index, row in enumerate(data):
                yield row if isinstance(row, dict) else BadItem(
                    item_id("not-an-object", path.name, index), f"row {index}: not a JSON object", index)
        else:
            yield from _read_jsonl(path)
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); is it a binary file?") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:  # json's decoder recurses once per [ or {: a file nested 200,000 deep ends here
        raise InputError(f"{path}: {_TOO_DEEP}") from None
    except (OSError, EOFError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise InputError(f"{path}: cannot read ({e})") from None


def _folder_kind(path: Path) -> str:
    from plumbing.runs import MANIFEST, RunError, read_manifest

    if not (path / MANIFEST).is_file():
        return "is a folder, not a file"
    try:
        return f"is a run directory (a {read_manifest(path).get('stage')!r} run), not a data file"
    except RunError:
        return "is a folder with an unreadable manifest, not a data file"


def _read_parquet(path: Path) -> Iterator[dict]:
    """Rows of a parquet file; a file pyarrow cannot read (not parquet, truncated) is an ``InputError``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"{path}: cannot read as parquet ({' '.join(str(e).split())[:160]}); is the file "
                         f"complete?") from None
    yield from table.to_pylist()


def _read_jsonl(path: Path) -> Iterator[dict | BadItem]:
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield BadItem(item_id("undecodable", path.name, lineno), f"line {lineno}: invalid JSON ({e.msg})",
                              lineno - 1)
                continue
            except RecursionError:
                yield BadItem(item_id("undecodable", path.name, lineno), f"line {lineno}: {_TOO_DEEP}", lineno - 1)
                continue
            yield row if isinstance(row, dict) else BadItem(
                item_id("undecodable", path.name, lineno), f"line {lineno}: not a JSON object", lineno - 1)


def to_messages(value) -> list[dict]:
    """A prompt cell -> chat messages: a string (plain or HH transcript) or a messages list."""
    if isinstance(value, str):
        if is_hh_transcript(value):
            conversation, _ = hh_split(value)
            return conversation if conversation and conversation[-1]["role"] == "user" else hh_messages(value)
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in value):
        msgs = [{"role": str(m["role"]), "content": str(m["content"] or "")} for m in value]
        # A full conversation ending with the assistant: the prompt is what precedes its last reply.
        while msgs and msgs[-1]["role"] == "assistant":
            msgs.pop()
        return msgs
    raise TypeError(f"expected a string or a list of {{role, content}} messages, got {type(value).__name__}")


def read_prompts(path: str | Path, prompt_column: str | None = None,
                 limit: int | None = None) -> Iterator[PromptItem | BadItem]:
    """Prompt items of a file. The id hashes the messages (and the occurrence number for
    repeated prompts), so it is stable across re-runs and identical prompts stay distinct."""
    seen: Counter[str] = Counter()
    column = prompt_column
    for index, row in enumerate(read_rows(path)):
        if limit is not None and index >= limit:
            return
        if isinstance(row, BadItem):
            yield row
            continue
        if column is None:
            column = next((c for c in PROMPT_COLUMNS if c in row), None)
            if column is None:
                raise InputError(f"{path}: no prompt column (tried {', '.join(PROMPT_COLUMNS)}; "
                                 f"row has {', '.join(map(str, row))}); pass --prompt-column")
        if column not in row:
            yield BadItem(item_id("missing", str(path), index), f"row {index}: no column {column!r}", index)
            continue
        try:
            messages = to_messages(row[column])
        except TypeError as e:
            yield BadItem(item_id("bad", str(path), index), f"row {index}: {e}", index)
            continue
        key = json.dumps(messages, sort_keys=True)
        seen[key] += 1
        iid = item_id(messages, seen[key])
        if not messages or not messages[-1]["content"].strip():
            yield BadItem(iid, f"row {index}: empty prompt", index)
            continue
        yield PromptItem(iid, messages, index)


def require_usable(path: str | Path, items: list[PromptItem | BadItem], allow_empty: bool = False) -> None:
    """Refuse a prompt file that yields no usable prompt (no rows, a header-only CSV, a
    ``--prompt-column`` no row has, only empty prompts): a run of nothing is no success, unless
    asked for with ``--allow-empty`` (tests/bad_inputs/cases.py)."""
    if allow_empty or any(isinstance(it, PromptItem) for it in items):
        return
    how = "pass --allow-empty to accept an empty run"
    if not items:
        raise InputError(f"{path}: no rows, so no prompts; give a file with prompts, or {how}")
    raise InputError(f"{path}: none of its {len(items)} rows is a usable prompt (first: {items[0].reason}); "
                     f"fix the file or --prompt-column, or {how}")
