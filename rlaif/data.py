"""``rlaif data gsm8k|arithmetic|mbpp``: problems with checkable answers -> a run directory for ``rlaif align grpo``.

    rlaif data gsm8k ../shared/data/gsm8k-train-1000.jsonl --out runs/gsm8k --limit 200
    rlaif data arithmetic --out runs/arith --count 64 --seed 0
    rlaif align grpo --data runs/gsm8k --model smollm2-135m --reward gsm8k --out models/grpo
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Import or make verifiable tasks (GSM8K, easy arithmetic, MBPP-style code) as GRPO training data.",
                  no_args_is_help=True)

OUT = typer.Option(..., "--out", help="Run directory to write (an empty or new folder, or a run of this stage).")
LIMIT = typer.Option(None, "--limit", help="Only the first N rows of the file.")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace an earlier run of this command (other data) in --out.")
PLAIN = typer.Option(False, "--plain", help="Keep the problem text unchanged (default: prompts/tasks/final_answer.jinja "
                     "asks for the answer as '#### <number>').")


def _import(path: Path, out: Path, kind: str, limit: int | None, overwrite: bool, plain: bool = False) -> None:
    from tasks.build import import_task

    _show(out, import_task(path, out, kind, limit=limit, overwrite=overwrite, plain=plain))


def _show(out: Path, counts: dict[str, int]) -> None:
    typer.echo(f"{out}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))


@app.command("gsm8k")
def gsm8k(file: Path = typer.Argument(..., help="GSM8K rows (question, answer): jsonl/json/parquet/csv."),
          out: Path = OUT, limit: int = LIMIT, overwrite: bool = OVERWRITE, plain: bool = PLAIN) -> None:
    """GSM8K problems -> id, prompt, answer (the gold solution, scored by the gsm8k reward)."""
    _import(file, out, "gsm8k", limit, overwrite, plain)


@app.command("arithmetic")
def arithmetic(out: Path = OUT,
               count: int = typer.Option(64, "--count", help="Number of distinct problems."),
               seed: int = typer.Option(0, "--seed", help="Seed of the problem draw (same seed, same problems)."),
               max_operand: int = typer.Option(20, "--max-operand", help="Largest operand."),
               overwrite: bool = OVERWRITE, plain: bool = PLAIN) -> None:
    """Easy arithmetic (a + b, a - b, a x b) -> id, prompt, answer in GSM8K's form, for the gsm8k reward."""
    from tasks.build import make_arithmetic

    _show(out, make_arithmetic(out, count=count, seed=seed, max_operand=max_operand, overwrite=overwrite, plain=plain))


@app.command("mbpp")
def mbpp(file: Path = typer.Argument(..., help="Code problems (text|prompt, test_list|tests): jsonl/json/parquet."),
         out: Path = OUT, limit: int = LIMIT, overwrite: bool = OVERWRITE) -> None:
    """MBPP-style code problems -> id, prompt, tests (Python asserts, run by the code reward)."""
    _import(file, out, "code", limit, overwrite)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="data")
