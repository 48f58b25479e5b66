"""The options of ``rlaif publish`` (and of a pipeline's publish stage): one judge run to the Hub, or
with ``dry_run`` to a folder (publish/upload.py)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class PublishConfig(BaseModel):
    """Publishing one judge run to the Hub (or, with ``dry_run``, to a folder)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    run_dir: Path = Field(description="A judge run directory (manifest stage 'judge').")
    repo_id: str = Field(description="Hub dataset repository, ORG/NAME (checked with huggingface_hub's validator).")
    private: bool = Field(False, description="Create the repository as private.")
    dry_run: Path | None = Field(None, description="Write the files that would be uploaded here; contact nothing.")
    constitution: Path | None = Field(None, description="The constitution file the run was judged with (default: "
                                                        "the file the run records, else the built-in one); its "
                                                        "sha256 must match.")
    eval_dir: Path | None = Field(None, description="A judge-eval output folder to show in the card "
                                                    "(default: <run>/judge-eval when it exists).")
    test_size: float = Field(0.1, ge=0.0, lt=1.0, description="Share of prompts drawn (by prompt-id hash) into "
                                                              "test, each with all its pairs.")
    license: str = Field("cc-by-4.0", pattern=r"^[a-z0-9][a-z0-9.\-]*$",
                         description="License id for the card (a Hub license id such as cc-by-4.0, apache-2.0).")
    seed: int = Field(0, description="Seed of the test split's prompt-id hash.")
