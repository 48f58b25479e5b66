"""``rlaif bench ...``: benchmarks that report ratios against a baseline run in the same command."""

from __future__ import annotations

import importlib

import typer

bench_app = typer.Typer(help="Benchmarks: each reports a ratio against a baseline measured in the same run, "
                             "and the CPU it ran on.", no_args_is_help=True)

# Each module defines register(bench_app); an area not built yet is simply absent.
BENCH_MODULES = ("rlaif.bench_generate", "rlaif.bench_judge", "rlaif.bench_dtype", "rlaif.bench_align",
                 "rlaif.bench_grpo", "rlaif.bench_all", "rlaif.bench_ppo")


def register(root: typer.Typer) -> None:
    for name in BENCH_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        module.register(bench_app)
    root.add_typer(bench_app, name="bench")
