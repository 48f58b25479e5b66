"""The layers of the README's layout, checked on the source: dependencies point downwards only,
plumbing sits on the ground floor, and no stage imports another stage's module for plumbing."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("plumbing", "constitution", "prompts", "generator", "judge", "align", "evaluation", "publish", "tasks",
            "pipeline", "service", "bench", "rlaif")
_BASE = {"plumbing", "prompts", "constitution", "generator", "judge", "align"}
# What each layer may import (besides itself and third-party code).
ALLOWED = {
    "plumbing": set(),
    "prompts": {"plumbing"},
    "constitution": {"plumbing", "prompts"},
    "generator": {"plumbing", "prompts", "constitution"},
    "judge": {"plumbing", "prompts", "constitution", "generator"},
    "align": {"plumbing", "prompts", "constitution", "generator", "judge"},
    "evaluation": _BASE,
    "publish": _BASE,
    "tasks": _BASE,
    "pipeline": _BASE | {"evaluation", "publish", "tasks"},
    "service": _BASE | {"evaluation", "publish", "tasks", "pipeline"},
    "bench": _BASE | {"evaluation", "publish", "tasks", "pipeline", "service"},
    "rlaif": set(PACKAGES),
}
# Stage modules: the work of one stage, never plumbing for another.
STAGE_MODULES = {"generator.generate", "generator.revise", "judge.build", "judge.evaluate", "publish.upload"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _modules():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")) if (ROOT / package).is_dir() else ():
            yield package, path, ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_dependencies_point_downwards_only():
    wrong = []
    for package, path, _ in _modules():
        for name in _imports(path):
            top = name.split(".")[0]
            if top in PACKAGES and top != package and top not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_no_stage_imports_another_stages_module():
    wrong = []
    for package, path, _ in _modules():
        if package in ("rlaif", "pipeline", "service", "bench"):
            continue  # the layers above the stages compose them
        for name in _imports(path):
            if name in STAGE_MODULES and name.split(".")[0] != package:
                wrong.append(f"{path.relative_to(ROOT)} imports the stage module {name}")
    assert not wrong, "\n".join(wrong)
