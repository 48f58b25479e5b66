"""What the playground page does with constitutions: the files it offers, a principle edited in the page linted
by the constitution loader, saved as a new version, listed with its diffs, and turned into an A/B job's recipe.

Files come from the built-in constitution, the service's uploads (``<root>/uploads/<sha256>/<name>``, what POST
/api/v1/uploads stores) and the operator's --data-dir folders; a path the page sends back is accepted only inside
those (the page never reads a file elsewhere). An edited constitution is written the way an upload is stored,
under the sha256 of its bytes, so a file is never overwritten: the same text lands on the same path. A saved
version is ``<name>-v<N>.yaml`` with ``version: N`` one above the highest version of that name already there;
the text a Compare judges as B is ``draft-<name>.yaml`` (same version as its base, listed with the drafts).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from constitution import (
    DEFAULT_PATH,
    ConstitutionError,
    diff,
    dump_yaml,
    load_constitution,
    parse_constitution,
)
from constitution.schema import FIELDS

SAMPLE = Path(__file__).resolve().parent / "data" / "hh-rlhf-harmless-sample.jsonl"
CONSTITUTION_SUFFIXES = (".yaml", ".yml")
SAMPLE_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".parquet", ".csv")
MAX_LISTED = 200  # files of one kind the page lists (newest first)
MAX_TEXT = 20_000  # characters of one edited principle text
VERSION_NAME = re.compile(r"^(?P<stem>.+)-v(?P<version>\d+)\.yaml$")
WHERE = re.compile(r": (?P<id>[a-z0-9-]+)\.(?P<field>" + "|".join(FIELDS) + r"):")


class PlaygroundError(ValueError):
    """A request the page can fix; the message is one line."""


def _uploaded(uploads: Path, suffixes: tuple[str, ...]) -> list[Path]:
    try:
        found = [p for d in uploads.iterdir() if d.is_dir() and not d.is_symlink()
                 for p in d.iterdir() if p.name.endswith(suffixes) and p.is_file() and not p.is_symlink()]
    except FileNotFoundError:
        return []
    return sorted(found, key=lambda p: (-p.stat().st_mtime, p.name))[:MAX_LISTED]


def describe(path: Path) -> dict:
    """A constitution file as the page lists it; one that does not load says why."""
    try:
        c = load_constitution(path)
    except ConstitutionError as e:
        return {"path": str(path), "file": path.name, "ok": False, "error": str(e)}
    return {"path": str(path), "file": path.name, "ok": True, "name": c.name, "version": c.version,
            "sha256": c.sha256(), "principles": len(c.principles)}


def constitution_files(uploads: Path) -> list[dict]:
    """The built-in constitution first, then the uploaded and saved ones, newest first."""
    return [{**describe(Path(DEFAULT_PATH)), "builtin": True},
            *({**describe(p), "builtin": False} for p in _uploaded(uploads, CONSTITUTION_SUFFIXES))]


def sample_files(uploads: Path) -> list[dict]:
    """The bundled HH-RLHF sample first, then uploaded files a labelled sample may be."""
    return [{"path": str(SAMPLE), "file": f"{SAMPLE.name} (bundled)"},
            *({"path": str(p), "file": p.name} for p in _uploaded(uploads, SAMPLE_SUFFIXES))]


def allowed_file(value: str, allowed: list[Path], what: str) -> Path:
    """``value`` as a file inside the folders the service reads (uploads, bundled data, --data-dir)."""
    path = Path(value or "")
    if not value or not path.is_absolute():
        raise PlaygroundError(f"{what}: pick a file from the list (or upload one)")
    real = path.resolve()
    if not any(real == f or real.is_relative_to(f) for f in allowed) or not real.is_file():
        raise PlaygroundError(f"{what}: {value} is not a file the service offers; pick one from the list")
    return path


def principles(path: Path) -> list[dict]:
    """The principles of a constitution file, for the page's editors."""
    try:
        c = load_constitution(path)
    except ConstitutionError as e:
        raise PlaygroundError(str(e)) from None
    return [{"id": p.id, "weight": p.weight, "tags": list(p.tags), **{f: p.text(f) for f in FIELDS}}
            for p in c.principles]


def _edits(value) -> dict[str, dict[str, str]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PlaygroundError("edits: a mapping {principle id: {field: text}}")
    out = {}
    for pid, fields in value.items():
        if not isinstance(fields, dict):
            raise PlaygroundError(f"edits.{pid}: a mapping {{field: text}}")
        for field, text in fields.items():
            if field not in FIELDS or not isinstance(text, str):
                raise PlaygroundError(f"edits.{pid}.{field}: the fields are {', '.join(FIELDS)}, each a text")
            if len(text) > MAX_TEXT:
                raise PlaygroundError(f"edits.{pid}.{field}: longer than {MAX_TEXT:,} characters")
        out[str(pid)] = dict(fields)
    return out


def edited_text(base: Path, edits, version: int | None = None) -> str:
    """The YAML of ``base`` with the principle texts of ``edits`` replaced (and ``version`` set); not checked."""
    edits = _edits(edits)
    try:
        const = load_constitution(base)
    except ConstitutionError as e:
        raise PlaygroundError(str(e)) from None
    known = {p.id for p in const.principles}
    unknown = sorted(set(edits) - known)
    if unknown:
        raise PlaygroundError(f"edits: {unknown[0]!r} is not a principle of {base.name} ({', '.join(sorted(known))})")
    ps = [p.model_copy(update=edits[p.id]) if p.id in edits else p for p in const.principles]
    update = {"principles": ps, **({"version": version} if version is not None else {})}
    return dump_yaml(const.model_copy(update=update))  # model_copy does not validate: parse_constitution does


def lint_text(text: str, source: str) -> dict:
    """The loader's verdict on an edited text: its one-line error (with the principle and field it names) or
    its warnings and sha256."""
    from constitution.lint import warnings_for

    try:
        const = parse_constitution(text, source=source)
    except ConstitutionError as e:
        line = str(e)
        where = WHERE.search(line)
        return {"ok": False, "error": line, "principle": where["id"] if where else None,
                "field": where["field"] if where else None}
    return {"ok": True, "error": None, "warnings": warnings_for(const), "sha256": const.sha256(),
            "name": const.name, "version": const.version}


def lint_edit(base: Path, edits) -> dict:
    return lint_text(edited_text(base, edits), f"{base.name} (edited)")


def store(uploads: Path, name: str, text: str) -> tuple[Path, bool]:
    """Write ``text`` as ``uploads/<sha256>/<name>`` unless that file exists (it then holds the same bytes);
    (path, written). Written to a temp file and linked into place, so a file is never replaced."""
    data = text.encode("utf-8")
    folder = uploads / hashlib.sha256(data).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / name
    if final.exists():
        return final, False
    fd, tmp = tempfile.mkstemp(prefix=".save-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            os.link(tmp, final)
        except FileExistsError:
            return final, False
    finally:
        os.unlink(tmp)
    return final, True


def _stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "constitution"


def saved_versions(uploads: Path, name: str) -> list[tuple[int, Path]]:
    """(version, path) of the saved versions of the constitution ``name``, oldest first."""
    out = []
    for path in _uploaded(uploads, (".yaml",)):
        m = VERSION_NAME.match(path.name)
        if m and m["stem"] == _stem(name):
            try:
                c = load_constitution(path)
            except ConstitutionError:
                continue
            if c.name == name:
                out.append((c.version, path))
    return sorted(out)


def _content(const) -> str:
    """What a constitution says, its version aside."""
    return const.model_copy(update={"version": 1}).sha256()


def save_version(uploads: Path, base: Path, edits) -> dict:
    """The edited constitution as a new version: one above the base's and every saved version's of its name; a
    text saved before (its version aside) is that version again, not a new one."""
    const = load_constitution(base)
    saved = saved_versions(uploads, const.name)
    text = edited_text(base, edits)
    verdict = lint_text(text, f"{base.name} (edited)")
    if not verdict["ok"]:
        raise PlaygroundError(verdict["error"])
    same = _content(parse_constitution(text))
    for version, path in saved:
        if _content(load_constitution(path)) == same:  # saved before: that version, no new one
            return {"path": str(path), "written": False, "version": version, "name": const.name,
                    "sha256": load_constitution(path).sha256(), "file_sha256": path.parent.name}
    version = max([const.version, *(v for v, _ in saved)]) + 1
    text = edited_text(base, edits, version=version)
    verdict = lint_text(text, f"{base.name} (edited)")
    path, written = store(uploads, f"{_stem(const.name)}-v{version}.yaml", text)
    return {"path": str(path), "written": written, "version": version, "name": const.name,
            "sha256": verdict["sha256"], "file_sha256": path.parent.name}


def save_draft(uploads: Path, base: Path, edits) -> tuple[Path, dict]:
    """The edited text a Compare judges as B; refused (one line) when it does not load."""
    const = load_constitution(base)
    text = edited_text(base, edits)
    verdict = lint_text(text, f"{base.name} (edited)")
    if not verdict["ok"]:
        raise PlaygroundError(verdict["error"])
    path, _ = store(uploads, f"draft-{_stem(const.name)}.yaml", text)
    return path, verdict


def _changes(old, new) -> dict:
    d = diff(old, new)
    return {"added": d.added, "removed": d.removed, "meta": d.meta, "reordered": d.reordered,
            "changed": [{"id": pid, "fields": [{"field": f, "old": _field(old, pid, f), "new": _field(new, pid, f)}
                                               for f in fields]}
                        for pid, fields in d.changed.items()]}


def _field(const, pid: str, field: str) -> str:
    value = getattr(const.principle(pid), field)
    return value if isinstance(value, str) else repr(value)


def version_history(uploads: Path, base: Path) -> list[dict]:
    """The built-in constitution (when it has the base's name) and every saved version of that name, oldest
    first, each with its diff from the one before (constitution/diff.py)."""
    name = load_constitution(base).name
    chain = [(load_constitution(p), p) for _, p in saved_versions(uploads, name)]
    builtin = load_constitution(DEFAULT_PATH)
    if builtin.name == name:
        chain.insert(0, (builtin, Path(DEFAULT_PATH)))
    out, before = [], None
    for const, path in chain:
        out.append({"version": const.version, "path": str(path), "file": path.name, "sha256": const.sha256(),
                    "diff": _changes(before, const) if before is not None else None})
        before = const
    return out
