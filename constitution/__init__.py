"""The constitution layer: schema, loader, lint, diff, hash and llm-swarm import.

A constitution file (YAML) lists principles whose critique, revision and compare texts are
Jinja templates (arXiv 2212.08073, appendix C). See ``constitution/default.yaml``.
"""

from pathlib import Path

from constitution.diff import ConstitutionDiff, diff
from constitution.import_hf import DEFAULT_COMPARE, dump_yaml, import_hf
from constitution.lint import LintReport, lint
from constitution.loader import DEFAULT_PATH, load_constitution, parse_constitution
from constitution.schema import (
    Constitution,
    ConstitutionError,
    FewShot,
    FewShotChat,
    FewShotCompare,
    Message,
    Principle,
)

__all__ = [
    "DEFAULT_COMPARE",
    "DEFAULT_PATH",
    "Constitution",
    "ConstitutionDiff",
    "ConstitutionError",
    "FewShot",
    "FewShotChat",
    "FewShotCompare",
    "LintReport",
    "Message",
    "Principle",
    "diff",
    "dump_yaml",
    "import_hf",
    "lint",
    "load_constitution",
    "parse_constitution",
    "path_or_default",
]


def path_or_default(path: str | Path | None) -> str | Path:
    """The constitution file a config or option names, else the built-in one (``DEFAULT_PATH``,
    constitution/default.yaml) when it names none (None or ""). A given path is returned as given, so
    what a run records is what the user wrote."""
    return path or DEFAULT_PATH
