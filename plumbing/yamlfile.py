"""Reading YAML a user wrote (recipes, ``--set`` values) with a bound on what it expands to.

YAML aliases let a short text stand for a huge value: nine lines of ``&a [*b, *b, ...]`` (the
"billion laughs") name 10**9 strings. PyYAML builds it cheaply as shared references, but the
first code that walks it as a tree (pydantic validating a free-form mapping such as a recipe's
``trl: {fsdp_config: ...}``, a deep copy, ``json.dumps`` for a hash) grows until ``MemoryError``.
So the composed node graph is measured first, with every alias counted as written out in full,
and refused above ``MAX_NODES`` values or ``MAX_CHARS`` characters. The measure is memoised per
node, so it takes time linear in the text however large the expansion
(tests/test_yamlfile.py::test_alias_bomb_is_refused_in_well_under_a_second).

A document nested past Python's recursion limit (``[[[[...`` 10,000 deep) makes PyYAML's composer
recurse until ``RecursionError``; it is refused the same way, as a ``YAMLLimitError``. Before that, PyYAML's
scanner keeps one possible simple key per open ``[`` or ``{`` and walks them all for every token it reads,
so a 100,000-deep document took 7.5 s of CPU to reach the recursion limit; ``Loader`` refuses a list or
mapping opened more than ``MAX_FLOW_DEPTH`` deep as the scanner meets it, in milliseconds
(tests/test_yamlfile.py::test_deep_flow_nesting_is_refused_as_it_is_read).
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_NODES = 100_000  # values (scalars, lists, mappings) with aliases written out; a large recipe has ~100
MAX_CHARS = 10_000_000  # characters of the scalars with aliases written out


MAX_FLOW_DEPTH = 100  # ``[`` / ``{`` open at once; a recipe or constitution nests a few


class YAMLLimitError(ValueError):
    """The YAML expands past the bounds above, refers to itself, or nests too deeply to read."""


class Loader(yaml.SafeLoader):
    """PyYAML's SafeLoader that refuses a list or mapping opened more than ``MAX_FLOW_DEPTH`` deep while it
    scans (the scanner's own count of open flow collections: a bracket inside a quoted string is not one)."""

    def fetch_flow_collection_start(self, TokenClass) -> None:  # noqa: N803 - PyYAML's name
        if self.flow_level >= MAX_FLOW_DEPTH:
            raise YAMLLimitError(f"nested too deeply to read (lists or mappings inside each other more than "
                                 f"{MAX_FLOW_DEPTH} deep, line {self.get_mark().line + 1}); flatten the YAML")
        super().fetch_flow_collection_start(TokenClass)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def expanded_size(root: Node) -> tuple[int, int]:
    """(values, scalar characters) of the document under ``root`` with every alias written out in full.

    Iterative (no recursion on deep documents) and memoised per node, so shared nodes are measured once.
    A node that contains itself (``&a [*a]``) expands forever: ``YAMLLimitError``."""
    sizes: dict[int, tuple[int, int]] = {}
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            nodes, chars = 1, len(node.value) if isinstance(node, ScalarNode) else 0
            for child in _children(node):
                n, c = sizes[id(child)]
                nodes, chars = nodes + n, chars + c
            sizes[key] = (nodes, chars)
            on_path.discard(key)
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise YAMLLimitError(f"line {node.start_mark.line + 1}: an alias refers to a value that contains it, so it "
                                 f"expands without end; write the value out")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)]


def check_expansion(root: Node) -> None:
    """Refuse a composed document that expands past ``MAX_NODES`` values or ``MAX_CHARS`` characters."""
    nodes, chars = expanded_size(root)
    if nodes > MAX_NODES or chars > MAX_CHARS:
        raise YAMLLimitError(f"its aliases expand to {nodes:,} values and {chars:,} characters (at most "
                             f"{MAX_NODES:,} values and {MAX_CHARS:,} characters are read); write the values out "
                             f"instead of repeating aliases")


def load(text: str) -> Any:
    """``yaml.safe_load(text)``, refusing what expands past the bounds (``YAMLLimitError``); a syntax
    error is PyYAML's ``yaml.YAMLError`` as usual."""
    loader = Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        check_expansion(root)
        return loader.construct_document(root)
    except RecursionError:
        raise YAMLLimitError("nested too deeply to read (lists or mappings inside each other past Python's "
                             "recursion limit)") from None
    finally:
        loader.dispose()
