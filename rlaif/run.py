"""``rlaif run RECIPE.yaml``: the whole loop from one recipe (pipeline/loop.py).

    rlaif run recipes/pipeline-cpu.yaml --dry-run      # the plan: what runs, what is reused and why
    rlaif run recipes/pipeline-cpu.yaml                 # run it; a re-run resumes or reuses
    rlaif run recipes/pipeline-cpu.yaml --from judge    # re-run judge and everything after it
"""

from __future__ import annotations

from pathlib import Path

import typer


def run(recipe: Path = typer.Argument(..., help="Pipeline recipe YAML (see recipes/pipeline-*.yaml)."),
        sets: list[str] = typer.Option([], "--set", help="Override a recipe key: key=value, e.g. dpo.max_steps=4."),
        start: str = typer.Option(None, "--from", help="Re-run this stage and every stage after it."),
        until: str = typer.Option(None, "--until", help="Stop after this stage."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; run and write nothing."),
        root: Path = typer.Option(None, "--root", help="The pipeline root; overrides the recipe's root.")) -> None:
    """Run a pipeline recipe: generate -> revise -> sft -> judge -> reward -> dpo|ppo|grpo -> eval -> publish,
    each stage a run directory under the recipe's root, ending in <root>/report.md."""
    import json

    from pipeline.loop import run_pipeline
    from pipeline.recipe import load_pipeline

    if root is not None:  # last, as a JSON string (valid YAML), so the path is taken exactly as given
        sets = [*sets, f"root={json.dumps(str(root))}"]
    pipeline = load_pipeline(recipe, sets)
    run_pipeline(pipeline, start=start, until=until, dry_run=dry_run, say=typer.echo)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
