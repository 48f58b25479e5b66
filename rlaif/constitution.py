"""``rlaif constitution lint | show | diff | import-hf | ab``.

Errors are raised as ``ConstitutionError``; ``rlaif.cli.main`` prints them as one line and exits 2.
"""

from __future__ import annotations

from pathlib import Path

import typer

from rlaif._options import BASE_URL, ENGINE, JUDGE_MODEL, QUIET, TEMPLATES

app = typer.Typer(help="Constitution files: lint, show, diff, import from llm-swarm JSON, A/B on human labels.",
                  no_args_is_help=True)


@app.command("lint")
def lint_cmd(path: Path = typer.Argument(None, help="Constitution YAML (default: the built-in one).",
                                         show_default=False)) -> None:
    """Check a constitution file; print its principle count and sha256 (exit 2 on the first error)."""
    from constitution import lint, path_or_default

    report = lint(path_or_default(path))
    for warning in report.warnings:
        typer.echo(f"warning: {report.path}: {warning}", err=True)
    typer.echo(f"{report.path}: ok: {report.name} v{report.version}, {report.principles} principles, "
               f"sha256 {report.sha256}")


@app.command("show")
def show_cmd(path: Path = typer.Argument(None, help="Constitution YAML (default: the built-in one).",
                                         show_default=False)) -> None:
    """Show the principles as a table: id, weight, tags and compare question."""
    from rich.console import Console
    from rich.table import Table

    from constitution import load_constitution, path_or_default

    const = load_constitution(path_or_default(path))
    table = Table(title=f"{const.name} v{const.version}", show_lines=True)
    table.add_column("id", style="bold", no_wrap=True)
    table.add_column("weight", justify="right")
    table.add_column("tags")
    table.add_column("compare")
    for p in const.principles:
        table.add_row(p.id, f"{p.weight:g}", ", ".join(p.tags), " ".join(p.compare.split()))
    console = Console()
    if const.description:
        console.print(const.description)
    console.print(table)
    total = sum(p.weight for p in const.principles)
    tags = sorted({t for p in const.principles for t in p.tags})
    tag_counts = ", ".join(f"{t} {sum(t in p.tags for p in const.principles)}" for t in tags)
    console.print(f"{len(const.principles)} principles (total weight {total:g}; {tag_counts or 'no tags'}), "
                  f"{len(const.few_shot.revision)} few-shot revision chats, "
                  f"{len(const.few_shot.compare)} few-shot comparisons, variables: "
                  f"{', '.join(const.variables) or 'none'}")
    console.print(f"sha256 {const.sha256()}")


@app.command("diff")
def diff_cmd(old: Path = typer.Argument(..., help="Old constitution YAML."),
             new: Path = typer.Argument(..., help="New constitution YAML.")) -> None:
    """List principles added, removed or changed (with the changed fields) from OLD to NEW."""
    from constitution import diff, load_constitution

    a, b = load_constitution(old), load_constitution(new)
    d = diff(a, b)
    if d.empty:
        typer.echo(f"no differences (sha256 {a.sha256()})")
        return
    for pid in d.added:
        typer.echo(f"added    {pid}")
    for pid in d.removed:
        typer.echo(f"removed  {pid}")
    for pid, fields in d.changed.items():
        typer.echo(f"changed  {pid}: {', '.join(fields)}")
    for fld in d.meta:
        typer.echo(f"changed  {fld}")
    if d.reordered:
        typer.echo("reordered principles")
    typer.echo(f"sha256 {a.sha256()} -> {b.sha256()}")


@app.command("import-hf")
def import_hf_cmd(
    json_path: Path = typer.Argument(..., help="llm-swarm constitution JSON (either format)."),
    out: Path = typer.Option(..., "--out", help="Constitution YAML to write."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
) -> None:
    """Convert a Hugging Face llm-swarm constitution JSON into a constitution YAML file."""
    from constitution import ConstitutionError, dump_yaml, import_hf, parse_constitution
    from constitution.import_hf import write_text_atomic

    if out.exists() and not force:
        raise ConstitutionError(f"{out}: already exists; pass --force to overwrite it or choose another --out")
    const = import_hf(json_path)
    text = dump_yaml(const)
    if parse_constitution(text, source=str(out)).sha256() != const.sha256():  # never write what won't load
        raise ConstitutionError(f"{out}: the converted YAML does not load back identically; please report this")
    write_text_atomic(out, text, force=force)
    typer.echo(f"{out}: {len(const.principles)} principles, {len(const.few_shot.revision)} few-shot chats, "
               f"sha256 {const.sha256()}")


@app.command("ab")
def ab_cmd(
    old: Path = typer.Argument(..., help="Constitution A (YAML), the one in use."),
    new: Path = typer.Argument(..., help="Constitution B (YAML), the edited one."),
    human: Path = typer.Option(..., "--human", help="Labelled pairs: an HH-RLHF file ({chosen, rejected} "
                                                    "transcripts; jsonl/json/parquet/csv, .gz ok) or a judge run."),
    out: Path = typer.Option(..., "--out", help="Folder for report.md, metrics.json, flips.jsonl and plots: new, "
                                                "empty, or an earlier ab output (with --overwrite)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier ab output in --out (its vote "
                                                              "cache is kept and reused; never any other folder)."),
    cache: Path = typer.Option(None, "--cache", help="Vote cache folder, shareable between runs; default <out>/cache."),
    limit: int = typer.Option(None, "--limit", help="Judge at most N pairs (the first ones)."),
    principles: str = typer.Option(None, "--principles", help="Judge with these principle ids only (ID,ID,...)."),
    model: str = JUDGE_MODEL,
    engine: str = ENGINE,
    base_url: list[str] = BASE_URL,
    principles_per_pair: int = typer.Option(4, "--principles-per-pair", help="Principles drawn per pair."),
    layout: str = typer.Option(None, "--layout", help="cai | shared-prefix; default: cai."),
    seed: int = typer.Option(0, "--seed", help="Seed of the principle draws and of the bootstrap."),
    batch_size: int = typer.Option(32, "--batch-size", help="Pairs per engine call (runtime only)."),
    templates: Path = TEMPLATES,
    quiet: bool = QUIET,
) -> None:
    """Judge one sample of human-labelled pairs under OLD and NEW (same judge, both orders, the same principle
    draws): agreement under each, the paired difference, McNemar, kappa, the flipped pairs (judge/ab.py)."""
    from judge.ab import ABConfig, run_ab
    from judge.config import JudgeConfig
    from plumbing.progress import StageProgress

    judge = JudgeConfig(model=model, engine=engine, base_urls=base_url or [], principles_per_pair=principles_per_pair,
                        layout=layout, templates=str(templates) if templates else None, seed=seed,
                        batch_size=batch_size)
    config = ABConfig(old=old, new=new, human=human, out=out, overwrite=overwrite, cache=cache, limit=limit,
                      principles=None if principles is None else [p.strip() for p in principles.split(",")],
                      judge=judge)
    with StageProgress("constitution ab", unit="votes", quiet=quiet) as progress:
        result = run_ab(config, progress=progress)
    a, b, paired, c = result["a"]["agreement"], result["b"]["agreement"], result["paired"], result["cost"]
    d, mc = paired["difference"], paired["mcnemar"]
    p_mcnemar = "n/a" if mc["pvalue"] is None else f"{mc['pvalue']:.3g}"

    def show(m: dict, sign: str = "") -> str:
        if m["value"] is None:
            return "n/a"
        return f"{m['value']:{sign}.3f}" + ("" if m.get("lo") is None else f" [{m['lo']:{sign}.3f}, {m['hi']:{sign}.3f}]")

    typer.echo(f"{out}: {result['n_pairs']} pairs; agreement A {show(a)} -> B {show(b)}; B - A {show(d, '+')} "
               f"over {paired['n_paired']} paired; McNemar p {p_mcnemar} ({mc['a_only']} right under A only, "
               f"{mc['b_only']} under B only); kappa {show(paired['kappa'])}; {len(result['flips'])} flips; "
               f"longer-wins baseline {show(result['baseline_longer_wins'])}; {c['fresh_votes']} fresh votes "
               f"({c['cached_votes']} cached), {c['total_seconds']:.1f} s")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="constitution")
