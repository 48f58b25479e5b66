"""``rlaif generate``: N responses per prompt (generator/generate.py)."""

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
    NUM_GPUS,
    OUT,
    PROMPTS,
    QUIET,
    REPLICAS,
    engine_options,
    summary,
)


def generate(
    prompts: Path = PROMPTS, out: Path = OUT, model: str = MODEL, engine: str = ENGINE,
    base_url: list[str] = BASE_URL, replicas: int = REPLICAS, num_gpus: float = NUM_GPUS,
    n: int = typer.Option(2, "--n", help="Responses per prompt."),
    temperature: float = typer.Option(0.7, "--temperature", help="Sampling temperature (0 = greedy)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling threshold."),
    max_tokens: int = typer.Option(256, "--max-tokens", help="Most tokens per response."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    limit: int = typer.Option(None, "--limit", help="Only the first N rows of the prompt file."),
    prompt_column: str = typer.Option(None, "--prompt-column", help="Prompt column (default: auto-detect)."),
    batch_size: int = BATCH,
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over if --out holds a different spec."),
    allow_empty: bool = ALLOW_EMPTY,
    quiet: bool = QUIET,
) -> None:
    """Sample N responses per prompt into a resumable run directory."""
    from generator.generate import GenerateConfig, run_generate

    config = GenerateConfig(prompts=prompts, out=out, engine=engine_options(model, engine, base_url, batch_size,
                                                                              replicas, num_gpus),
                            n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed,
                            limit=limit, prompt_column=prompt_column, overwrite=overwrite, allow_empty=allow_empty)
    with StageProgress("generate", unit="prompts", quiet=quiet) as progress:
        counts = run_generate(config, progress=progress)
    typer.echo(summary(out, counts))


def register(root: typer.Typer) -> None:
    root.command("generate")(generate)
