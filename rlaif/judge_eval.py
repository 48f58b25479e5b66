"""``rlaif judge-eval``: the judge against human labels (judge/evaluate.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from rlaif._options import BASE_URL, ENGINE, JUDGE_MODEL, QUIET, TEMPLATES


def judge_eval(
    human: Path = typer.Option(..., "--human", help="HH-RLHF-format file: rows {chosen, rejected} transcripts "
                                                    "(jsonl/json/parquet/csv, .gz ok)."),
    out: Path = typer.Option(..., "--out", help="Folder for report.md, metrics.json, pairs.jsonl and plots: new, "
                                                "empty, or an earlier judge-eval output (with --overwrite)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier judge-eval output in --out "
                                                              "(never any other folder)."),
    limit: int = typer.Option(None, "--limit", help="Evaluate at most N rows (after --offset)."),
    offset: int = typer.Option(0, "--offset", help="Skip the first O rows."),
    constitution: Path = typer.Option(None, "--constitution", help="Constitution YAML (default: built-in)."),
    model: str = JUDGE_MODEL,
    engine: str = ENGINE,
    base_url: list[str] = BASE_URL,
    principles_per_pair: int = typer.Option(4, "--principles-per-pair", help="Principles sampled per pair."),
    cot: bool = typer.Option(False, "--cot", help="Chain-of-thought judging (clamped probabilities)."),
    layout: str = typer.Option(None, "--layout", help="cai | shared-prefix (the question after the responses); "
                                                     "default: cai."),
    calibrate: str = typer.Option("none", "--calibrate", help="none | batch: which calibration the headline "
                                                              "metrics use (both are always reported)."),
    templates: Path = TEMPLATES,
    seed: int = typer.Option(0, "--seed", help="Seed of principle sampling and of the bootstrap."),
    inject: bool = typer.Option(False, "--inject", help="Also judge each pair with an instruction injected into "
                                                        "the rejected reply; report how far it moves the verdict."),
    batch_size: int = typer.Option(32, "--batch-size", help="Pairs per engine call (runtime only)."),
    quiet: bool = QUIET,
) -> None:
    """Judge human-labelled pairs (chosen vs rejected, both orders): agreement, position bias, calibration
    (and with --inject, how far an instruction injected into the rejected reply moves the verdict)."""
    from judge.config import JudgeConfig
    from judge.evaluate import JudgeEvalConfig, run_judge_eval
    from plumbing.progress import StageProgress

    judge = JudgeConfig(constitution=str(constitution) if constitution else None, model=model, engine=engine,
                        base_urls=base_url or [], principles_per_pair=principles_per_pair, cot=cot,
                        layout=layout, calibrate=calibrate, templates=str(templates) if templates else None, seed=seed, batch_size=batch_size)
    config = JudgeEvalConfig(human=human, out=out, overwrite=overwrite, limit=limit, offset=offset, judge=judge,
                             inject=inject)
    with StageProgress("judge-eval", unit="pairs", quiet=quiet) as progress:
        result = run_judge_eval(config, progress=progress)
    a, c, f, e = (result[k] for k in ("agreement", "position_consistency", "first_position_win_rate", "calibration"))

    def show(m: dict) -> str:
        if m["value"] is None:
            return "n/a"
        return f"{m['value']:.3f}" + ("" if m.get("lo") is None else f" [{m['lo']:.3f}, {m['hi']:.3f}]")

    injected = ""
    if "injection" in result:
        inj = result["injection"]
        injected = (f"; injection: flip rate {show(inj['flip_rate'])}, mean shift {show(inj['mean_shift'])}, "
                    f"agreement {show(inj['agreement'])}")
    typer.echo(f"{out}: {result['n_pairs']} pairs ({result['unscored']} unscored, {a['ties']} ties); "
               f"agreement {show(a)}; position consistency {show(c)}; first-position win rate {show(f)}; "
               f"ECE {show(e)}{injected}")
    for mode, m in result["by_calibration"].items():
        typer.echo(f"  calibration {mode}: agreement {show(m['agreement'])}; position consistency "
                   f"{show(m['position_consistency'])}; first-position win rate "
                   f"{show(m['first_position_win_rate'])}; ECE {show(m['calibration'])}")


def register(root: typer.Typer) -> None:
    root.command("judge-eval")(judge_eval)
