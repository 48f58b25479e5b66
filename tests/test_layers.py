"""The layers of the README's layout, checked on the source: dependencies point downwards only,
plumbing sits on the ground floor, no stage imports another stage's module for plumbing, no two modules
import each other (directly or around a circle), and every command is one hop from its code: it lives in the
CLI module named as the command, and that module imports its stage's package."""

from __future__ import annotations

import ast
import inspect
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


# --- no import circles -----------------------------------------------------------------------------------------


def _module_names() -> dict[str, Path]:
    """Every module of every top-level package of the repository (a folder with __init__.py, tests aside),
    the package itself named without ``__init__``."""
    mods = {}
    for pkg in sorted(p for p in ROOT.iterdir() if (p / "__init__.py").is_file() and p.name != "tests"):
        for path in pkg.rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    return mods


def _imported(module: str, path: Path) -> list[str]:
    """What ``module`` imports anywhere in its source (inside functions and ``TYPE_CHECKING`` blocks too);
    ``from pkg import name`` counts as importing ``pkg`` and, when it is one, the submodule ``pkg.name``."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module
            if node.level:  # relative: from the package the module is in (a package's __init__ is that package)
                parts = module.split(".")
                keep = len(parts) - node.level + (path.name == "__init__.py")
                base = ".".join(parts[:keep] + ([node.module] if node.module else []))
            names += [base] + [f"{base}.{a.name}" for a in node.names]
    return names


def import_graph():
    """The repository's modules and who imports whom (an import of an object resolves to its module)."""
    import networkx as nx

    mods = _module_names()

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = nx.DiGraph()
    graph.add_nodes_from(mods)
    for module, path in mods.items():
        for name in _imported(module, path):
            target = owner(name)
            if target is not None and target != module:
                graph.add_edge(module, target)
    return graph


def test_no_import_circles():
    """No group of modules imports itself around a circle (strongly connected components of the import graph).
    A package's __init__ that imports its submodule counts: a submodule must import its siblings as
    ``import pkg.sibling as sibling`` or ``from pkg.sibling import x``, not ``from pkg import sibling``."""
    import networkx as nx

    graph = import_graph()
    assert len(graph) > 100  # the walk found the repository
    circles = []
    for group in sorted(sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1):
        cycle = [edge[0] for edge in nx.find_cycle(graph.subgraph(group))]
        circles.append(f"{', '.join(group)} (e.g. {' -> '.join([*cycle, cycle[0]])})")
    assert not circles, "import circles:\n" + "\n".join(circles)


# --- every command one hop from its module -----------------------------------------------------------------------

# What each top command's module (rlaif/<command>.py) must import directly: its stage's package or module. A new
# command is added here too (the test below fails until it is).
STAGE_OF = {
    "models": "generator.models",
    "engine": "generator.engines",
    "generate": "generator.generate",
    "revise": "generator.revise",
    "judge": "judge.build",
    "judge-eval": "judge.evaluate",
    "publish": "publish.upload",
    "data": "tasks.build",
    "align": "align",
    "eval": "evaluation.evaluate",
    "run": "pipeline",
    "demo": "pipeline.demo",
    "serve": "service",
    "jobs": "service.client",
    "constitution": "constitution",
    "bench": "bench",
}


def _commands(group, path=()):
    """(command words, callback) of every command of a typer app, its groups walked."""
    for info in group.registered_commands:
        yield (*path, info.name or info.callback.__name__.replace("_", "-")), info.callback
    for sub in group.registered_groups:
        yield from _commands(sub.typer_instance, (*path, sub.name))


def test_every_command_lives_in_the_module_named_as_it():
    """``rlaif revise`` is defined in rlaif/revise.py, ``rlaif judge-eval`` in rlaif/judge_eval.py, ``rlaif align
    dpo`` in rlaif/align.py. The benchmarks are the exception: ``rlaif bench <name>`` lives in a module of the
    bench/ package (bench.MODULES; ``rlaif bench dpo`` in bench/align.py), which rlaif/bench.py mounts."""
    import bench
    from rlaif.cli import app

    commands = list(_commands(app))
    assert len(commands) > 30
    wrong = []
    for words, callback in commands:
        module = inspect.unwrap(callback).__module__
        home = f"rlaif.{words[0].replace('-', '_')}"
        allowed = {home} | ({f"bench.{m}" for m in bench.MODULES} if words[0] == "bench" else set())
        if module not in allowed:
            wrong.append(f"`rlaif {' '.join(words)}` is defined in {module}, not in {home}")
    assert not wrong, "\n".join(wrong)


def test_every_command_module_imports_its_stage_directly():
    """rlaif/revise.py imports generator.revise, rlaif/publish.py publish.upload, rlaif/data.py tasks.build,
    rlaif/eval.py evaluation.evaluate, rlaif/run.py a module of pipeline/: the stage's code is one hop away."""
    from rlaif.cli import app

    tops = {words[0] for words, _ in _commands(app)}
    assert tops == set(STAGE_OF), f"commands without a stage in STAGE_OF: {sorted(tops - set(STAGE_OF))}; " \
                                  f"stages of no command: {sorted(set(STAGE_OF) - tops)}"
    wrong = []
    for top, stage in STAGE_OF.items():
        module = f"rlaif.{top.replace('-', '_')}"
        path = ROOT / "rlaif" / f"{top.replace('-', '_')}.py"
        if not any(n == stage or n.startswith(f"{stage}.") for n in _imported(module, path)):
            wrong.append(f"{path.relative_to(ROOT)} does not import {stage} (the code of `rlaif {top}`)")
    assert not wrong, "\n".join(wrong)
