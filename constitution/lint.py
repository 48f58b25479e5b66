"""``rlaif constitution lint``: load (which refuses any error) and report softer warnings."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from constitution.loader import load_constitution
from constitution.schema import FIELDS, Constitution
from prompts import undeclared_variables

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LintReport:
    """What ``lint`` found in a constitution that loads: counts, hash and warnings (never errors)."""

    path: str
    name: str
    version: int
    principles: int
    sha256: str
    tags: dict[str, int] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return not self.warnings


def lint(path: str | Path) -> LintReport:
    """Check a constitution file; raises :class:`ConstitutionError` on the first error."""
    const = load_constitution(path)
    warnings = tuple(warnings_for(const))
    for w in warnings:
        logger.info("%s: %s", path, w)
    tags = Counter(t for p in const.principles for t in p.tags)
    return LintReport(path=str(path), name=const.name, version=const.version, principles=len(const.principles),
                      sha256=const.sha256(), tags=dict(sorted(tags.items())), warnings=warnings)


def warnings_for(const: Constitution) -> list[str]:
    """Things that load but are probably mistakes."""
    out: list[str] = []
    for p in const.principles:
        if "?" not in p.compare:
            out.append(f"{p.id}.compare: not phrased as a question; the judge answers with an option "
                       "letter, so ask e.g. 'Which of these responses ...?'")
    for fld in FIELDS:
        seen: dict[str, str] = {}
        for p in const.principles:
            text = " ".join(p.text(fld).split())
            if text in seen:
                out.append(f"{p.id}.{fld}: same text as {seen[text]}.{fld}; merge the principles or "
                           "raise the weight of one")
            seen.setdefault(text, p.id)
    used = set().union(*(undeclared_variables(p.text(f)) for p in const.principles for f in FIELDS))
    used |= set().union(*(undeclared_variables(ex.principle) for ex in const.few_shot.compare))
    for name in sorted(set(const.variables) - used):
        out.append(f"variables.{name}: defined but never used; remove it or use it in a principle")
    answers = {ex.answer for ex in const.few_shot.compare}
    if len(const.few_shot.compare) >= 2 and len(answers) == 1:
        out.append(f"few_shot.compare: every example's answer is {answers.pop()}; mix A and B so the "
                   "judge does not learn a position bias")
    return out
