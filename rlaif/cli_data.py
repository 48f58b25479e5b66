"""``rlaif data gsm8k|mbpp``: problems with checkable answers -> a run directory for ``rlaif align grpo``.

    rlaif data gsm8k ../shared/data/gsm8k-train-1000.jsonl --out runs/gsm8k --limit 200
    rlaif align grpo --data runs/gsm8k --model smollm2-135m --reward gsm8k --out models/grpo
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Import verifiable tasks (GSM8K, MBPP-style code) as GRPO training data.",
                  no_args_is_help=True)

OUT = typer.Option(..., "--out", help="Run directory to write (an empty or new folder, or a run of this stage).")
LIMIT = typer.Option(None, "--limit", help="Only the first N rows of the file.")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace an earlier import of another file in --out.")


def _import(path: Path, out: Path, kind: str, limit: int | None, overwrite: bool) -> None:
    from align.tasks import import_task

    counts = import_task(path, out, kind, limit=limit, overwrite=overwrite)
    typer.echo(f"{out}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))


@app.command("gsm8k")
def gsm8k(file: Path = typer.Argument(..., help="GSM8K rows (question, answer): jsonl/json/parquet/csv."),
          out: Path = OUT, limit: int = LIMIT, overwrite: bool = OVERWRITE) -> None:
    """GSM8K problems -> id, prompt, answer (the gold solution, scored by the gsm8k reward)."""
    _import(file, out, "gsm8k", limit, overwrite)


@app.command("mbpp")
def mbpp(file: Path = typer.Argument(..., help="Code problems (text|prompt, test_list|tests): jsonl/json/parquet."),
         out: Path = OUT, limit: int = LIMIT, overwrite: bool = OVERWRITE) -> None:
    """MBPP-style code problems -> id, prompt, tests (Python asserts, run by the code reward)."""
    _import(file, out, "code", limit, overwrite)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="data")
