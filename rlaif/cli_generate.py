"""``rlaif generate`` and ``rlaif revise``."""

from __future__ import annotations

from pathlib import Path

import typer

from rlaif.progress import StageProgress

PROMPTS = typer.Option(..., "--prompts", help="Prompt file: jsonl/json/parquet/csv (.gz ok); text, messages or HH-RLHF.")
OUT = typer.Option(..., "--out", help="Run directory (resumed when it already holds this spec).")
MODEL = typer.Option("smollm2-135m", "--model", help="Embedded model name, local folder or Hub id.")
ENGINE = typer.Option("auto", "--engine", help="auto | vllm | openai | transformers | fake | an 'rlaif.engines' entry "
                                               "point | module:Class (a generator.engines.base.EngineBase subclass).")
BASE_URL = typer.Option(None, "--base-url", help="OpenAI-compatible server URL; repeat for several replicas "
                                                 "(--engine auto then means openai; other engines refuse it).")
BATCH = typer.Option(32, "--batch-size", help="Prompts per engine call and per shard (not part of the spec).")
QUIET = typer.Option(False, "--quiet", help="No progress bar.")
ALLOW_EMPTY = typer.Option(False, "--allow-empty", help="Accept a prompt file with no usable prompt (an empty run) "
                                                        "instead of refusing it.")


def _engine_options(model, engine, base_url, batch_size):
    from generator.engines.options import EngineOptions

    return EngineOptions(model=model, engine=engine, base_urls=base_url or [], batch_size=batch_size)


def _summary(out: Path, counts: dict) -> str:
    rows = ", ".join(f"{v} {k}" for k, v in counts.items())
    return f"{out}: {rows}"


def generate(
    prompts: Path = PROMPTS, out: Path = OUT, model: str = MODEL, engine: str = ENGINE,
    base_url: list[str] = BASE_URL,
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

    config = GenerateConfig(prompts=prompts, out=out, engine=_engine_options(model, engine, base_url, batch_size),
                            n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed,
                            limit=limit, prompt_column=prompt_column, overwrite=overwrite, allow_empty=allow_empty)
    with StageProgress("generate", unit="prompts", quiet=quiet) as progress:
        counts = run_generate(config, progress=progress)
    typer.echo(_summary(out, counts))


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
                          engine=_engine_options(model, engine, base_url, batch_size), temperature=temperature,
                          max_tokens=max_tokens, seed=seed, limit=limit, prompt_column=prompt_column,
                          templates=templates, overwrite=overwrite, allow_empty=allow_empty)
    with StageProgress("revise", unit="prompts", quiet=quiet) as progress:
        counts = run_revise(config, progress=progress)
    typer.echo(_summary(out, counts))


def register(root: typer.Typer) -> None:
    root.command("generate")(generate)
    root.command("revise")(revise)
