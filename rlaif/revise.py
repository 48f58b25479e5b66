"""``rlaif revise``: SL-CAI critique -> revision rounds (generator/revise.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from plumbing.progress import StageProgress
from rlaif._options import (
    ALLOW_EMPTY,
    BASE_URL,
    BATCH,
    ENGINE,
    MODEL,
    OUT,
    PROMPTS,
    QUIET,
    engine_options,
    summary,
)


def revise(
    prompts: Path = PROMPTS, out: Path = OUT,
    constitution: Path = typer.Option(..., "--constitution", help="Constitution YAML file."),
    rounds: int = typer.Option(1, "--rounds", help="Critique -> revision rounds."),
    model: str = MODEL, engine: str = ENGINE, base_url: list[str] = BASE_URL,
    temperature: float = typer.Option(0.7, "--temperature", help="Sampling temperature (0 = greedy)."),
    max_tokens: int = typer.Option(256, "--max-tokens", help="Most tokens per generated turn."),
    seed: int = typer.Option(0, "--seed", help="Sampling and principle-sampling seed."),
    limit: int = typer.Option(None, "--limit", help="Only the first N rows of the prompt file."),
    prompt_column: str = typer.Option(None, "--prompt-column", help="Prompt column (default: auto-detect)."),
    templates: Path = typer.Option(None, "--templates", help="Folder of .jinja files shadowing the built-ins."),
    batch_size: int = BATCH,
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over if --out holds a different spec."),
    allow_empty: bool = ALLOW_EMPTY,
    quiet: bool = QUIET,
) -> None:
    """SL-CAI: initial response, then critique -> revision rounds against sampled principles."""
    from generator.revise import ReviseConfig, run_revise

    config = ReviseConfig(prompts=prompts, out=out, constitution=constitution, rounds=rounds,
                          engine=engine_options(model, engine, base_url, batch_size), temperature=temperature,
                          max_tokens=max_tokens, seed=seed, limit=limit, prompt_column=prompt_column,
                          templates=templates, overwrite=overwrite, allow_empty=allow_empty)
    with StageProgress("revise", unit="prompts", quiet=quiet) as progress:
        counts = run_revise(config, progress=progress)
    typer.echo(summary(out, counts))


def register(root: typer.Typer) -> None:
    root.command("revise")(revise)
