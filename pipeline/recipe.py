"""The pipeline recipe (``rlaif run RECIPE.yaml``): what a user decides, checked when it loads, every stage's own
config built from it (pipeline/stages.py) so a bad key fails before anything runs. Its stage keys, their order and
what each stage needs listed come from the stage registry (pipeline/stages.py ``STAGES``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails

from generator.engines.options import BatchSize, EngineChoice
from pipeline.errors import PipelineError
from pipeline.stages import stages

BUNDLED_PROMPTS = Path(__file__).resolve().parent / "data" / "demo_prompts.jsonl"


class Engines(EngineChoice):
    """The engine of generate, revise and eval's policy and reference (their model is the recipe's, or a stage's
    output); the judge's are the ``judge:`` mapping's."""

    model_config = ConfigDict(extra="forbid")
    batch_size: BatchSize = 16


class PipelineRecipe(BaseModel):
    """One loop: what a user decides. Each registered stage's key (pipeline/stages.py ``STAGES``) holds that
    stage's own options, the keys of its command's config (``generate: {n: 2}``, ``judge: {principles_per_pair:
    4}``, ``dpo:`` the keys of an `rlaif align dpo` recipe, ``publish: {repo_id, private, dry_run}``: dry_run
    defaults to true, the files go to <root>/publish and nothing is uploaded), checked when the recipe loads."""

    model_config = ConfigDict(extra="allow")  # the stages' keys; any other key is refused (``_stage_keys``)
    __pydantic_extra__: dict[str, dict[str, Any]] = Field(init=False)
    name: str = Field(description="Name shown in the report.")
    root: str = Field(description="Folder of the stages' run directories, pipeline.json and report.md.")
    stages: list[str] = Field(min_length=1, description="Stages to run, a subset of pipeline/stages.py STAGES.")
    model: str = Field("smollm2-135m", description="The model the loop starts from (responses, revisions, the "
                       "policy's start and eval's reference).")
    constitution: str | None = Field(None, description="Constitution YAML; default: the built-in one.")
    prompts: str | None = Field(None, description="Prompt file of generate, revise and eval; default: the 16 "
                                "bundled demo prompts (pipeline/data/demo_prompts.jsonl).")
    engine: Engines = Field(default_factory=Engines)

    @model_validator(mode="wrap")
    @classmethod
    def _stage_keys(cls, data: Any, handler):
        """A key that is neither a field nor a registered stage is refused as pydantic refuses an extra key."""
        if isinstance(data, dict):
            known = stages()
            unknown = [k for k in data if k not in cls.model_fields and k not in known]
            if unknown:
                raise ValidationError.from_exception_data(cls.__name__, [InitErrorDetails(
                    type="extra_forbidden", loc=(unknown[0],), input=data[unknown[0]])])
        return handler(data)

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, v: list[str]) -> list[str]:
        known = stages()
        unknown = [s for s in v if s not in known]
        if unknown:
            raise ValueError(f"unknown stage {unknown[0]!r}; stages are {', '.join(known)}")
        if len(set(v)) != len(v):
            raise ValueError("a stage is listed twice")
        return [s for s in known if s in v]  # the loop's order, whatever the listing's

    @model_validator(mode="after")
    def _needs(self) -> PipelineRecipe:
        known = stages()
        for stage in self.stages:
            needed = known[stage].needs
            if needed and not set(needed) & set(self.stages):
                raise ValueError(f"stage {stage!r} reads the output of {' or '.join(needed)}; add it to stages")
        trained = [s for s, entry in known.items() if entry.role == "policy"]
        if len(set(trained) & set(self.stages)) > 1:
            raise ValueError(f"list one of {', '.join(trained)}: eval compares one trained policy with the start model")
        return self

    def options(self, stage: str) -> dict[str, Any]:
        """The recipe's mapping for ``stage`` (empty when it has none)."""
        return dict((self.model_extra or {}).get(stage) or {})

    def path(self, stage: str) -> Path:
        return Path(self.root) / stage

    def prompts_file(self) -> Path:
        return Path(self.prompts) if self.prompts else BUNDLED_PROMPTS


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> PipelineRecipe:
    """The recipe at ``path`` with ``--set`` overrides, every stage's config built (so a bad key fails here)."""
    from generator.engines.options import strip_credentials_everywhere
    from pipeline.stages import build_all
    from plumbing.errors import validation_line
    from plumbing.recipes import merge, parse_set, read_yaml

    try:
        # server credentials (http://user:key@host) stay in memory: never in pipeline.json nor any record
        raw = strip_credentials_everywhere(merge(read_yaml(path), parse_set(overrides or [])))
    except ValueError as e:
        raise PipelineError(str(e)) from None
    try:
        recipe = PipelineRecipe.model_validate(raw)
    except ValidationError as e:
        raise PipelineError(validation_line(e, str(path), no_key="recipe", more=False)) from None
    if not recipe.prompts_file().is_file():
        raise PipelineError(f"{path}: prompts {recipe.prompts_file()}: no such file")
    build_all(recipe)  # each stage's own validation, before anything is written
    return recipe
