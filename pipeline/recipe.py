"""The pipeline recipe (``rlaif run RECIPE.yaml``): what a user decides, checked when it loads, every stage's own
config built from it (pipeline/stages.py) so a bad key fails before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from generator.engines.options import BatchSize, EngineChoice
from pipeline.root import STAGES, PipelineError

TRAINED = ("dpo", "ppo", "grpo")
# The stages a stage reads (when the recipe lists them).
UPSTREAM: dict[str, tuple[str, ...]] = {
    "generate": (), "revise": (), "sft": ("revise",), "judge": ("generate",), "reward": ("judge",),
    "dpo": ("judge", "sft"), "ppo": ("reward", "sft"), "grpo": ("sft",),
    "eval": ("sft", "dpo", "ppo", "grpo"), "publish": ("judge",),
}
# Stages that cannot run without one of these listed.
NEEDS: dict[str, tuple[str, ...]] = {"sft": ("revise",), "judge": ("generate",), "reward": ("judge",),
                                     "dpo": ("judge",), "ppo": ("reward",), "eval": ("sft", *TRAINED),
                                     "publish": ("judge",)}
BUNDLED_PROMPTS = Path(__file__).resolve().parent / "data" / "demo_prompts.jsonl"


class Engines(EngineChoice):
    """The engine of generate, revise and eval's policy and reference (their model is the recipe's, or a stage's
    output); the judge's are the ``judge:`` mapping's."""

    model_config = ConfigDict(extra="forbid")
    batch_size: BatchSize = 16


class PipelineRecipe(BaseModel):
    """One loop: what a user decides. Each stage's mapping holds that stage's own options (the keys of
    its command's config), checked when the recipe loads."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="Name shown in the report.")
    root: str = Field(description="Folder of the stages' run directories, pipeline.json and report.md.")
    stages: list[str] = Field(min_length=1, description=f"Stages to run, a subset of {', '.join(STAGES)}.")
    model: str = Field("smollm2-135m", description="The model the loop starts from (responses, revisions, the "
                       "policy's start and eval's reference).")
    constitution: str | None = Field(None, description="Constitution YAML; default: the built-in one.")
    prompts: str | None = Field(None, description="Prompt file of generate, revise and eval; default: the 16 "
                                "bundled demo prompts (pipeline/data/demo_prompts.jsonl).")
    engine: Engines = Field(default_factory=Engines)
    generate: dict[str, Any] = Field(default_factory=dict)
    revise: dict[str, Any] = Field(default_factory=dict)
    judge: dict[str, Any] = Field(default_factory=dict, description="JudgeConfig keys: model, engine, base_urls, "
                                  "principles_per_pair, layout, calibrate, ...")
    sft: dict[str, Any] = Field(default_factory=dict, description="Keys of an `rlaif align sft` recipe.")
    reward: dict[str, Any] = Field(default_factory=dict, description="Keys of an `rlaif align reward` recipe.")
    dpo: dict[str, Any] = Field(default_factory=dict, description="Keys of an `rlaif align dpo` recipe.")
    ppo: dict[str, Any] = Field(default_factory=dict, description="Keys of an `rlaif align ppo` recipe.")
    grpo: dict[str, Any] = Field(default_factory=dict, description="Keys of an `rlaif align grpo` recipe "
                                 "(data: its prompts, e.g. a `rlaif data gsm8k` run).")
    eval: dict[str, Any] = Field(default_factory=dict, description="EvalConfig keys: max_tokens, limit, ...")
    publish: dict[str, Any] = Field(default_factory=dict, description="repo_id, private, dry_run (default: "
                                    "true: the files go to <root>/publish and nothing is uploaded).")

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, v: list[str]) -> list[str]:
        unknown = [s for s in v if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage {unknown[0]!r}; stages are {', '.join(STAGES)}")
        if len(set(v)) != len(v):
            raise ValueError("a stage is listed twice")
        return [s for s in STAGES if s in v]  # the loop's order, whatever the listing's

    @model_validator(mode="after")
    def _needs(self) -> PipelineRecipe:
        for stage in self.stages:
            needed = NEEDS.get(stage, ())
            if needed and not set(needed) & set(self.stages):
                raise ValueError(f"stage {stage!r} reads the output of {' or '.join(needed)}; add it to stages")
        if len(set(TRAINED) & set(self.stages)) > 1:
            raise ValueError(f"list one of {', '.join(TRAINED)}: eval compares one trained policy with the start model")
        return self

    def path(self, stage: str) -> Path:
        return Path(self.root) / stage

    def prompts_file(self) -> Path:
        return Path(self.prompts) if self.prompts else BUNDLED_PROMPTS


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> PipelineRecipe:
    """The recipe at ``path`` with ``--set`` overrides, every stage's config built (so a bad key fails here)."""
    from align.config import merge, parse_set, read_yaml
    from generator.engines.options import strip_credentials_everywhere
    from pipeline.stages import build_all

    try:
        # server credentials (http://user:key@host) stay in memory: never in pipeline.json nor any record
        raw = strip_credentials_everywhere(merge(read_yaml(path), parse_set(overrides or [])))
    except ValueError as e:
        raise PipelineError(str(e)) from None
    try:
        recipe = PipelineRecipe.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ())) or "recipe"
        raise PipelineError(f"{path}: {loc}: {first.get('msg', 'invalid').removeprefix('Value error, ')}") from None
    if not recipe.prompts_file().is_file():
        raise PipelineError(f"{path}: prompts {recipe.prompts_file()}: no such file")
    build_all(recipe)  # each stage's own validation, before anything is written
    return recipe
