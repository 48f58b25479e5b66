"""``rlaif bench ...``: benchmarks that report ratios against a baseline run in the same command (bench/)."""

from __future__ import annotations

import typer

bench_app = typer.Typer(help="Benchmarks: each reports a ratio against a baseline measured in the same run, "
                             "and the CPU it ran on.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    import bench

    bench.register(bench_app)
    root.add_typer(bench_app, name="bench")
