"""``rlaif demo``: the whole loop on the embedded defaults (pipeline/demo.py)."""

from __future__ import annotations

from pathlib import Path

import typer


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
    from pipeline.demo import run_demo

    run_demo(out, model, engine, typer.echo, start=start)


def register(root: typer.Typer) -> None:
    root.command("demo")(demo)
