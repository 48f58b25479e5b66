"""``rlaif judge``: constitution judge -> preference run (judge/build.py does the work)."""

from __future__ import annotations

from pathlib import Path

import typer

from plumbing.progress import StageProgress
from rlaif._options import BASE_URL, ENGINE, NUM_GPUS, REPLICAS


def register(root: typer.Typer) -> None:
    root.command("judge")(judge)


def judge(
    input: Path = typer.Option(..., "--input", help="A generate run, a revise run, or a pair file "
                               "(jsonl/json/parquet/csv with prompt, response_a, response_b)."),
    out: Path = typer.Option(..., "--out", help="Output run directory (preference rows)."),
    constitution: Path | None = typer.Option(None, "--constitution", help="Constitution YAML (default: built-in)."),
    model: str = typer.Option("smollm2-135m", help="Judge model: embedded name, folder or Hub id."),
    engine: str = ENGINE,
    base_url: list[str] = BASE_URL,
    replicas: int = REPLICAS,
    num_gpus: float = NUM_GPUS,
    principles_per_pair: int = typer.Option(4, help="Principles sampled per pair and ensembled."),
    orders: str = typer.Option("both", help="both | one: score both option orders to cancel position bias."),
    cot: bool = typer.Option(False, "--cot", help="Chain-of-thought rationales before the option letter."),
    cot_samples: int = typer.Option(4, help="Rationales per (pair, principle, order) with --cot."),
    layout: str | None = typer.Option(None, "--layout", help="cai (the paper's: principle, then the responses) | "
                                      "shared-prefix (responses, then the principle's question: faster with a "
                                      "prefix cache). Default: cai (also with --cot)."),
    calibrate: str = typer.Option("none", "--calibrate", help="none | batch (divide each P(A) by the run's mean "
                                  "P(A), both orders; arXiv 2309.17249). Votes keep the raw value as p_a_raw."),
    pairing: str = typer.Option("all", help="all | best-worst (Bradley-Terry ranking of N responses)."),
    min_confidence: float = typer.Option(0.0, help="Rows with p_chosen below this go to split 'filtered'."),
    templates: Path | None = typer.Option(None, "--templates", help="Folder of .jinja files shadowing prompts/."),
    seed: int = typer.Option(0, help="Seed of principle sampling and CoT sampling."),
    batch_size: int = typer.Option(64, help="Pairs judged per engine call (runtime only)."),
    limit: int | None = typer.Option(None, help="Judge only the first N input items."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over if the output run's spec changed."),
    allow_empty: bool = typer.Option(False, "--allow-empty", help="Accept an input with nothing to judge (an empty "
                                                                  "run) instead of refusing it."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Judge response pairs against the constitution's principles (option logprobs, both orders,
    principle ensembling; arXiv 2212.08073) and write a TRL preference dataset."""
    from judge.build import run_judge
    from judge.config import JudgeConfig

    config = JudgeConfig(
        input=str(input), out=str(out), constitution=str(constitution) if constitution else None, model=model,
        engine=engine, base_urls=base_url or [], principles_per_pair=principles_per_pair, orders=orders, cot=cot,
        cot_samples=cot_samples, layout=layout, calibrate=calibrate, pairing=pairing, min_confidence=min_confidence,
        templates=str(templates) if templates else None, seed=seed, batch_size=batch_size, limit=limit,
        overwrite=overwrite, allow_empty=allow_empty, replicas=replicas, num_gpus=num_gpus)
    with StageProgress("judging", unit="pairs", quiet=quiet) as progress:
        summary = run_judge(config, progress=progress)
    typer.echo(summary.line())

