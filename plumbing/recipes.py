"""Recipe files a user writes (``rlaif align --config``, ``rlaif run RECIPE``): read as a YAML mapping, changed
by ``--set key=value`` overrides, merged. Every problem is one ``RecipeError`` line naming the file or the
override and how to fix it; what a recipe's aliases expand to is bounded (plumbing/yamlfile.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class RecipeError(ValueError):
    """A recipe or its data cannot be used; the message names the key or file and how to fix it."""


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["a.b=1", "trl.bf16=true"]`` -> ``{"a": {"b": 1}, "trl": {"bf16": True}}``; values are YAML scalars."""
    import yaml

    from plumbing import yamlfile

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--set {item!r}: expected key=value, e.g. --set learning_rate=1e-5")
        try:
            value = yamlfile.load(raw) if raw.strip() else None
        except yamlfile.YAMLLimitError as e:
            raise RecipeError(f"--set {key.strip()}: {e}") from None
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError(f"--set {item!r}: {part} is set both as a value and as a mapping")
        node[parts[-1]] = value
    return out


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``over`` into a copy of ``base`` (mappings merge, everything else replaces). A ``data`` key
    may be a bare path on either side: a path replaces the mapping's ``path`` and keeps its split settings."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        elif key == "data" and isinstance(value, dict) and isinstance(out.get(key), str):
            out[key] = merge({"path": out[key]}, value)
        elif key == "data" and isinstance(value, str | Path) and isinstance(out.get(key), dict):
            out[key] = {**out[key], "path": str(value)}  # --data keeps the recipe's split settings
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A recipe file as a mapping; what its aliases expand to is bounded (plumbing/yamlfile.py)."""
    import yaml

    from plumbing import yamlfile

    p = Path(path)
    if not p.is_file():  # named by its path alone: `rlaif align --config` and `rlaif run RECIPE` both read here
        raise RecipeError(f"{p}: no such recipe file")
    try:
        raw = yamlfile.load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise RecipeError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start}); a recipe is a YAML text file") from None
    except yamlfile.YAMLLimitError as e:
        raise RecipeError(f"{p}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{p}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{p}: a recipe is a YAML mapping (model:, data:, output_dir:, ...)")
    return raw
