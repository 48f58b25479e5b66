"""Import a Hugging Face llm-swarm constitution JSON (huggingface/llm-swarm, examples/constitutional-ai/).

Two formats exist:

* a JSON list of ``{"critic": ..., "revision": ...}`` objects;
* ``{"constitutions": [{"critic", "revision"}, ...], "system_chat": [[{"role", "content"}, ...], ...]}``,
  where each ``system_chat`` entry is a worked critique/revision chat (it becomes a
  :class:`FewShotChat`).

llm-swarm has no comparison question (it only does SL-CAI), so each imported principle gets
:data:`DEFAULT_COMPARE` filled in with its critique text. llm-swarm texts are literal strings, not
Jinja, so any Jinja delimiter in them is escaped to render as written.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from constitution.loader import check_templates, read_text
from constitution.schema import Constitution, ConstitutionError, FewShot, FewShotChat, Principle
from plumbing import atomic

logger = logging.getLogger(__name__)

# The comparison question given to an imported principle (data, not a prompt file: it becomes the
# principle's ``compare`` text, which users are expected to refine). ``{critic}`` is the critique text.
DEFAULT_COMPARE = ('Which of these responses would hold up better against this critique request: "{critic}"? '
                   "Choose the response with fewer of the problems it asks about.")

_JINJA_OPEN = re.compile(r"\{(?=[{%#])")


def escape_jinja(text: str) -> str:
    """Make a literal text render unchanged as a Jinja template (``{{`` -> ``{{ '{' }}{``)."""
    return _JINJA_OPEN.sub("{{ '{' }}", text)


def _entries(data: Any, source: str) -> tuple[list, list]:
    if isinstance(data, list):
        return data, []
    if isinstance(data, dict) and "constitutions" in data:
        unknown = set(data) - {"constitutions", "system_chat"}
        if unknown:
            logger.warning("%s: ignoring unknown keys %s", source, ", ".join(sorted(unknown)))
        chats = data.get("system_chat") or []
        if not isinstance(data["constitutions"], list) or not isinstance(chats, list):
            raise ConstitutionError(f"{source}: constitutions/system_chat: expected JSON lists; "
                                    "see llm-swarm's examples/constitutional-ai/ for the format")
        return data["constitutions"], chats
    raise ConstitutionError(f"{source}: top level: not an llm-swarm constitution; expected a list of "
                            '{"critic", "revision"} objects or {"constitutions": [...], "system_chat": [...]}')


def _principle(i: int, item: Any, source: str) -> Principle:
    where = f"{source}: constitutions[{i}]"
    if not isinstance(item, dict):
        raise ConstitutionError(f"{where}: expected an object with 'critic' and 'revision'; fix the entry")
    for key in ("critic", "revision"):
        if not isinstance(item.get(key), str) or not item[key].strip():
            raise ConstitutionError(f"{where}: '{key}' is missing or empty; give it a non-empty string")
    unknown = set(item) - {"critic", "revision"}
    if unknown:
        logger.warning("%s: ignoring unknown keys %s", where, ", ".join(sorted(unknown)))
    critic, revision = item["critic"].strip(), item["revision"].strip()
    return Principle(id=f"hf-{i + 1:03d}", critique=escape_jinja(critic), revision=escape_jinja(revision),
                     compare=escape_jinja(DEFAULT_COMPARE.format(critic=critic.rstrip("?. "))))


def _chat(j: int, chat: Any, source: str) -> FewShotChat:
    try:
        return FewShotChat.model_validate({"messages": chat})
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        msg = str(first["msg"]).removeprefix("Value error, ")
        raise ConstitutionError(f"{source}: system_chat[{j}]: {loc}: {msg}"
                                + ("" if ";" in msg else "; each message needs 'role' and 'content'")) from None


def import_hf(json_path: str | Path) -> Constitution:
    """Convert an llm-swarm constitution JSON file (either format) into a :class:`Constitution`."""
    path = Path(json_path)
    source = str(path)
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise ConstitutionError(f"{source}:{e.lineno}: JSON syntax error: {e.msg}; fix the JSON") from None
    except RecursionError:  # json's decoder recurses once per [ or {
        raise ConstitutionError(f"{source}: JSON nested too deeply to read; an llm-swarm constitution is a list "
                                "of {\"critic\", \"revision\"} objects") from None
    items, chats = _entries(data, source)
    if not items:
        raise ConstitutionError(f"{source}: constitutions: no principles; add at least one "
                                '{"critic", "revision"} object')
    name = re.sub(r"[^a-z0-9-]+", "-", path.stem.lower()).strip("-") or "imported"
    const = Constitution(
        name=name, version=1, description=f"Imported from llm-swarm file {path.name}.",
        principles=[_principle(i, item, source) for i, item in enumerate(items)],
        few_shot=FewShot(revision=[_chat(j, chat, source) for j, chat in enumerate(chats)]),
    )
    const._source = source
    check_templates(const, None, source)
    logger.info("imported %d principles and %d few-shot chats from %s", len(const.principles), len(chats), source)
    return const


class _Dumper(yaml.SafeDumper):
    pass


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None  # PyYAML falls back to quoting where a block is impossible
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def dump_yaml(constitution: Constitution) -> str:
    """The constitution as readable YAML that loads back to the same ``sha256()``."""
    data = constitution.model_dump(mode="json")
    if not data["description"]:
        del data["description"]
    if not data["variables"]:
        del data["variables"]
    if not (data["few_shot"]["revision"] or data["few_shot"]["compare"]):
        del data["few_shot"]
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def write_text_atomic(path: str | Path, text: str, *, force: bool = False) -> None:
    """Write ``text`` to a temp file next to ``path`` and rename it into place: a reader sees the old
    file or the new one, never half of one. Refuses to replace an existing file unless ``force``."""
    path = Path(path)
    if path.exists() and not force:
        raise ConstitutionError(f"{path}: already exists; pass --force to overwrite it or choose another --out")
    if not path.parent.is_dir():
        raise ConstitutionError(f"{path}: folder {path.parent} does not exist; create it first")
    atomic.write_text(path, text)
