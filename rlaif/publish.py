"""``rlaif publish``: a judge run to the Hub as a dataset with a card (publish/upload.py)."""

from __future__ import annotations

from pathlib import Path

import typer


def publish(
    run_dir: Path = typer.Argument(..., help="A judge run directory (rlaif judge --out)."),
    repo_id: str = typer.Option(..., "--repo-id", help="Hub dataset repository, ORG/NAME."),
    private: bool = typer.Option(False, "--private", help="Create the repository as private."),
    dry_run: Path = typer.Option(None, "--dry-run", help="Write the files that would be uploaded into this "
                                                         "folder and contact nothing."),
    constitution: Path = typer.Option(None, "--constitution", help="The constitution the run was judged with "
                                                                   "(default: the file the run records, else "
                                                                   "the built-in one); "
                                                                   "its sha256 must match the run's."),
    eval_dir: Path = typer.Option(None, "--eval", help="A judge-eval --out folder whose figures go in the card "
                                                       "(default: <run>/judge-eval if present)."),
    test_size: float = typer.Option(0.1, "--test-size", help="Share of prompts whose pairs all go to the test "
                                                             "split (by prompt-id hash: every pair of a prompt "
                                                             "on one side, stable across re-publishing)."),
    license_: str = typer.Option("cc-by-4.0", "--license", help="License id of the dataset card."),
    seed: int = typer.Option(0, "--seed", help="Seed of the test split's prompt-id hash."),
) -> None:
    """Publish a judge run as a Hub dataset (train/test + filtered config) with a dataset card."""
    from datasets.utils.logging import disable_progress_bar

    from publish.config import PublishConfig
    from publish.upload import run_publish

    disable_progress_bar()  # datasets' per-shard bars would bury the one summary line
    config = PublishConfig(run_dir=run_dir, repo_id=repo_id, private=private, dry_run=dry_run,
                           constitution=constitution, eval_dir=eval_dir, test_size=test_size, license=license_,
                           seed=seed)
    typer.echo(run_publish(config))


def register(root: typer.Typer) -> None:
    root.command("publish")(publish)
