"""``rlaif constitution diff``: which principles were added, removed or changed between two versions."""

from __future__ import annotations

from dataclasses import dataclass, field

from constitution.schema import Constitution, Principle

# Top-level fields compared besides the principles.
_META_FIELDS = ("name", "version", "description", "variables", "few_shot")


@dataclass(frozen=True)
class ConstitutionDiff:
    """Differences from ``old`` to ``new``; ``changed`` maps a principle id to its changed fields,
    ``meta`` lists the changed top-level fields (name, version, variables, few_shot, ...)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: dict[str, list[str]] = field(default_factory=dict)
    meta: list[str] = field(default_factory=list)
    reordered: bool = False

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.meta or self.reordered)


def _changed_fields(a: Principle, b: Principle) -> list[str]:
    da, db = a.model_dump(), b.model_dump()
    return [k for k in da if da[k] != db[k]]


def diff(old: Constitution, new: Constitution) -> ConstitutionDiff:
    """Compare two constitutions principle by principle (matched by id)."""
    old_ids = [p.id for p in old.principles]
    new_ids = [p.id for p in new.principles]
    changed = {}
    for pid in (i for i in new_ids if i in set(old_ids)):
        fields = _changed_fields(old.principle(pid), new.principle(pid))
        if fields:
            changed[pid] = fields
    kept_old = [i for i in old_ids if i in set(new_ids)]
    kept_new = [i for i in new_ids if i in set(old_ids)]
    meta = [f for f in _META_FIELDS
            if old.model_dump(include={f}) != new.model_dump(include={f})]
    return ConstitutionDiff(added=[i for i in new_ids if i not in set(old_ids)],
                            removed=[i for i in old_ids if i not in set(new_ids)],
                            changed=changed, meta=meta, reordered=kept_old != kept_new)
