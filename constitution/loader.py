"""Load a constitution YAML file: YAML -> pydantic -> template checks, with one-line errors.

Every refusal is a :class:`ConstitutionError` whose message is one line,
``<file>:<line>: <principle id or field>: <what is wrong>; <how to fix>``. Line numbers come
from yaml's compose tree (node start marks), which is walked along a pydantic error's ``loc``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from jinja2 import TemplateSyntaxError
from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from constitution.schema import (
    MAX_TEMPLATE_NODES,
    MAX_TEXT_CHARS,
    TAG_FIX,
    Constitution,
    ConstitutionError,
    TemplateProblem,
    disallowed_tags,
    render_source,
)
from plumbing.chat import last_user_message
from plumbing.yamlfile import Loader, YAMLLimitError, check_expansion
from prompts import node_count, undeclared_variables, unsafe_constructs
from prompts.limits import Budget

logger = logging.getLogger(__name__)

DEFAULT_PATH = Path(__file__).resolve().parent / "default.yaml"

# A sample item for the render check at load time: a text that fails here would fail on every item.
SAMPLE_PROMPT = "How do I keep basil alive on a windowsill?"
SAMPLE_CONVERSATION = [
    {"role": "user", "content": SAMPLE_PROMPT},
    {"role": "assistant", "content": "Give it at least six hours of sun and water when the soil feels dry."},
]

_HINTS = {
    "float_parsing": "write a number such as 1.0",
    "float_type": "write a number such as 1.0",
    "int_parsing": "write a whole number such as 1",
    "int_type": "write a whole number such as 1",
    "int_from_float": "write a whole number such as 1",
    "string_type": "write text (quote it if YAML reads it as a number, date or yes/no)",
    "list_type": "write a YAML list ('- item' lines or [a, b])",
    "dict_type": "write a YAML mapping (key: value lines)",
    "model_type": "write a YAML mapping (key: value lines)",
    "model_attributes_type": "write a YAML mapping (key: value lines)",
    "literal_error": "use one of the allowed values",
    "greater_than": "use a positive number",
    "greater_than_equal": "use a larger number",
    "too_short": "add at least one entry",
    "string_too_short": "write a non-empty value",
}


def load_constitution(path: str | Path) -> Constitution:
    """Read, validate and check a constitution file; raises :class:`ConstitutionError` on the first problem."""
    path = Path(path)
    return parse_constitution(read_text(path), source=str(path))


def parse_constitution(text: str, source: str = "<string>") -> Constitution:
    """Validate constitution YAML ``text``; ``source`` names it in error messages."""
    root, data = _parse_yaml(text, source)
    if not isinstance(data, dict):
        raise ConstitutionError(f"{source}:{_line_of(root, ())}: top level: expected a mapping with name, "
                                "version and principles; see constitution/default.yaml for an example")
    _check_duplicate_ids(data, root, source)
    try:
        const = Constitution.model_validate(data)
    except ValidationError as e:
        raise _explain(e, data, root, source) from None
    const._source = source
    check_templates(const, root, source)
    logger.debug("loaded constitution %s v%s from %s (%d principles)", const.name, const.version, source,
                 len(const.principles))
    return const


def read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConstitutionError(f"{path}: file not found; check the path (the built-in one is "
                                f"{DEFAULT_PATH})") from None
    except IsADirectoryError:
        raise ConstitutionError(f"{path}: is a folder; give the path of a .yaml file") from None
    except PermissionError:
        raise ConstitutionError(f"{path}: permission denied; make the file readable") from None
    if b"\0" in raw:
        line = raw[: raw.index(b"\0")].count(b"\n") + 1
        raise ConstitutionError(f"{path}:{line}: binary file (NUL byte); a constitution is a UTF-8 YAML text file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConstitutionError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                                "save the constitution as UTF-8 YAML") from None


def _parse_yaml(text: str, source: str) -> tuple[Node | None, Any]:
    loader = Loader(text)  # a document nested past its bound is refused as it is read (plumbing/yamlfile.py)
    try:
        root = loader.get_single_node()
        if root is not None:
            check_expansion(root)  # an alias bomb is refused before it is built (plumbing/yamlfile.py)
            _check_duplicate_keys(root, source)
        return root, (loader.construct_document(root) if root is not None else None)
    except YAMLLimitError as e:
        raise ConstitutionError(f"{source}: {e}") from None
    except RecursionError:
        raise ConstitutionError(f"{source}: nested too deeply to read (lists or mappings inside each other past "
                                "Python's recursion limit); flatten the YAML") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        what = " ".join(f"{e.context or ''} {e.problem or ''}".split()) or "invalid YAML"
        raise ConstitutionError(f"{source}:{line}: YAML syntax error: {what}; fix the YAML (indentation, "
                                "quoting, ':' after each key)") from None
    except yaml.YAMLError as e:  # e.g. ReaderError on control characters (no mark)
        raise ConstitutionError(f"{source}: YAML error: {' '.join(str(e).split())}; fix the file") from None
    finally:
        loader.dispose()


def _check_duplicate_keys(root: Node, source: str) -> None:
    """YAML silently keeps the last of two equal keys; a lost principle text is worse than an error."""
    stack, seen_nodes = [root], set()
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, MappingNode):
            keys: dict[str, int] = {}
            for k, v in node.value:
                if isinstance(k, ScalarNode):
                    if k.value in keys:
                        raise ConstitutionError(
                            f"{source}:{k.start_mark.line + 1}: {k.value}: duplicate key (first at line "
                            f"{keys[k.value]}); keep only one")
                    keys[k.value] = k.start_mark.line + 1
                stack.append(v)
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)


def _node_at(root: Node | None, loc: tuple, *, key: bool = True) -> Node | None:
    """The deepest node along ``loc``; a mapping key's own node when ``loc`` ends at a key and ``key``."""
    cur = root
    for i, part in enumerate(loc):
        if isinstance(cur, MappingNode):
            match = next(((k, v) for k, v in cur.value if isinstance(k, ScalarNode) and k.value == str(part)), None)
            if match is None:
                return cur
            cur = match[0] if key and i == len(loc) - 1 else match[1]
        elif isinstance(cur, SequenceNode) and isinstance(part, int) and 0 <= part < len(cur.value):
            cur = cur.value[part]
        else:
            return cur
    return cur


def _line_of(root: Node | None, loc: tuple) -> int:
    node = _node_at(root, loc)
    return node.start_mark.line + 1 if node is not None else 1


def _where(loc: tuple, data: dict) -> str:
    """``harm-general.weight`` for a principle field, ``few_shot.compare[0].answer`` otherwise."""
    parts = list(loc)
    out = ""
    if len(parts) >= 2 and parts[0] == "principles" and isinstance(parts[1], int):
        items = data.get("principles")
        item = items[parts[1]] if isinstance(items, list) and parts[1] < len(items) else None
        pid = item.get("id") if isinstance(item, dict) else None
        out = pid if isinstance(pid, str) and pid else f"principles[{parts[1]}]"
        parts = parts[2:]
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "top level"


def _model_for(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that holds the last element of ``loc`` (for listing allowed fields)."""
    model: Any = Constitution
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        while get_origin(ann) in (list, dict):
            ann = get_args(ann)[-1]
        model = ann
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _explain(exc: ValidationError, data: dict, root: Node | None, source: str) -> ConstitutionError:
    err = exc.errors()[0]
    loc = tuple(err.get("loc", ()))
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        model = _model_for(loc)
        allowed = ", ".join(model.model_fields) if model else "see constitution/default.yaml"
        what, fix = f"unknown field {loc[-1]!r}", f"remove it or fix the spelling (allowed: {allowed})"
    elif kind == "missing":
        what, fix = f"required field {loc[-1]!r} is missing", "add it"
    elif kind == "value_error":
        what, _, fix = str(err["msg"]).removeprefix("Value error, ").partition("; ")
        fix = fix or "fix the value"
    else:
        got = repr(err.get("input"))
        what = f"{err['msg']} (got {got if len(got) <= 60 else got[:57] + '...'})"
        fix = _HINTS.get(kind, "fix the value")
    more = exc.error_count() - 1
    tail = f" ({more} more problem{'s' if more > 1 else ''} after this one)" if more else ""
    return ConstitutionError(f"{source}:{_line_of(root, loc)}: {_where(loc, data)}: {what}; {fix}{tail}")


def _check_duplicate_ids(data: dict, root: Node | None, source: str) -> None:
    items = data.get("principles")
    if not isinstance(items, list):
        return
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        pid = item.get("id") if isinstance(item, dict) else None
        if not isinstance(pid, str):
            continue
        line = _line_of(root, ("principles", i, "id"))
        if pid in first:
            raise ConstitutionError(f"{source}:{line}: {pid}: duplicate principle id (first at line "
                                    f"{first[pid]}); give every principle its own id")
        first[pid] = line


def _text_line(root: Node | None, loc: tuple, template_line: int) -> int:
    """The file line of line ``template_line`` of the text at ``loc`` (exact for block scalars)."""
    node = _node_at(root, loc, key=False)
    if node is None:
        return 1
    start = node.start_mark.line + 1
    if isinstance(node, ScalarNode) and node.style in ("|", ">"):
        start += 1  # the text begins on the line after the '|' indicator
    return start + max(template_line, 1) - 1


def check_text(text: str, context: dict, *, where: str, loc: tuple, root: Node | None, source: str,
               budget: Budget | None = None) -> int:
    """Refuse a principle text that is too long, does not parse, uses a tag other than ``{% if %}``,
    reaches for Python internals, uses an undefined name, or does not render on ``context`` within
    the sandbox's limits (``budget``, if given, is shared with other texts); returns its number of
    Jinja nodes (``prompts.node_count``)."""
    allowed = set(context)

    def fail(template_line: int, what: str, fix: str) -> ConstitutionError:
        return ConstitutionError(f"{source}:{_text_line(root, loc, template_line)}: {where}: {what}; {fix}")

    if len(text) > MAX_TEXT_CHARS:
        raise fail(1, f"text of {len(text):,} characters is over the limit of {MAX_TEXT_CHARS:,}",
                   "shorten it (a principle is a request or a question of a few sentences)")
    try:
        size = node_count(text)
        tags = disallowed_tags(text)
        names = undeclared_variables(text)
        unsafe = unsafe_constructs(text)
    except TemplateSyntaxError as e:
        raise fail(e.lineno or 1, f"Jinja syntax error: {' '.join(e.message.split()) if e.message else e}",
                   "fix the template ('{{ name }}' for values, '{% ... %}' for tags)") from None
    if tags:
        line, tag = tags[0]
        raise fail(line, f"'{{% {tag} %}}' is not allowed in a principle text", TAG_FIX)
    if unsafe:
        line, what = unsafe[0]
        raise fail(line, f"unsafe construct ({what}) refused: templates may not reach Python internals",
                   "use only variables, plain filters and tests")
    missing = sorted(names - allowed)
    if missing:
        raise fail(1, f"undefined variable {missing[0]!r}",
                   f"define it under 'variables:' or use one of: {', '.join(sorted(allowed))}")
    try:
        render_source(text, context, budget)
    except TemplateProblem as e:
        raise fail(1, f"does not render: {e}", "fix the template") from None
    return size


def check_templates(const: Constitution, root: Node | None, source: str) -> None:
    """Check every principle text (and few-shot principle text), refusing a constitution once its texts
    have more than ``MAX_TEMPLATE_NODES`` Jinja nodes in all (which bounds the time compiling takes);
    the sample renders of all texts share one budget (``prompts/limits.py``), so a file of many texts
    together does no more rendering work than one render may."""
    texts = []
    context = const.context(prompt=SAMPLE_PROMPT, conversation=SAMPLE_CONVERSATION)
    for i, p in enumerate(const.principles):
        for field in ("critique", "revision", "compare"):
            texts.append((p.text(field), context, f"{p.id}.{field}", ("principles", i, field)))
    for j, ex in enumerate(const.few_shot.compare):
        conv = [m.model_dump() for m in ex.conversation]
        texts.append((ex.principle, const.context(prompt=last_user_message(conv), conversation=conv),
                      f"few_shot.compare[{j}].principle", ("few_shot", "compare", j, "principle")))
    total, budget = 0, Budget()
    for text, ctx, where, loc in texts:
        total += check_text(text, ctx, where=where, loc=loc, root=root, source=source, budget=budget)
        if total > MAX_TEMPLATE_NODES:
            raise ConstitutionError(
                f"{source}:{_text_line(root, loc, 1)}: {where}: the principle texts up to this one have more than "
                f"{MAX_TEMPLATE_NODES:,} Jinja nodes in all (each piece of text, name, constant, operator, filter "
                "and tag counts one); shorten the texts or split the constitution")
