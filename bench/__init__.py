"""Benchmarks (``rlaif bench ...``): each reports a ratio against a baseline measured in the same command, and
the CPU it ran on."""

import importlib

# Each module defines register(app): its `rlaif bench <name>` command(s).
MODULES = ("generate", "judge", "dtype", "align", "grpo", "all", "ppo", "service", "ray")


def register(app) -> None:
    """Mount every benchmark's command on ``app`` (the ``rlaif bench`` group)."""
    for name in MODULES:
        importlib.import_module(f"bench.{name}").register(app)
