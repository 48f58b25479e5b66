"""``rlaif generate``: sample N responses per prompt and write a resumable responses run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from generator.engines import Engine, Sampling
from generator.engines.options import EngineOptions, check_served, provenance
from generator.records import RESPONSES
from plumbing.batching import iter_batches
from plumbing.hashing import canonical_json, file_sha256
from plumbing.inputs import BadItem, PromptItem, read_prompts, require_usable
from plumbing.ranges import Seed
from plumbing.runs import RunWriter


class GenerateConfig(BaseModel):
    """One responses run: what defines the data (the spec) and how it is run."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a temperature of inf or nan samples nothing
    prompts: Path = Field(description="Prompt file: jsonl/json/parquet/csv (.gz ok), text, messages or HH-RLHF.")
    out: Path = Field(description="Run directory to write (resumed if it exists).")
    engine: EngineOptions = Field(default_factory=EngineOptions)
    n: int = Field(2, ge=1, description="Responses sampled per prompt.")
    temperature: float = Field(0.7, ge=0.0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling threshold.")
    max_tokens: int = Field(256, ge=1, description="Most tokens generated per response.")
    seed: Seed = Field(0, description="Sampling seed (0 .. 2**32 - 1: plumbing/ranges.py).")
    limit: int | None = Field(None, ge=1, description="Use only the first N rows of the prompt file.")
    prompt_column: str | None = Field(None, description="Column holding the prompt (default: auto-detect).")
    overwrite: bool = Field(False, description="Start over when the directory holds a different spec.")
    allow_empty: bool = Field(False, description="Accept a prompt file with no usable prompt (an empty run) "
                                                 "instead of refusing it.")

    def sampling(self) -> Sampling:
        return Sampling(n=self.n, temperature=self.temperature, top_p=self.top_p,
                        max_tokens=self.max_tokens, seed=self.seed)


def split_too_long(engine: Engine, items: list[PromptItem], max_tokens: int) -> tuple[list, list[BadItem]]:
    """Items whose prompt plus ``max_tokens`` exceeds the model's context become errors."""
    fits, bad = [], []
    for item in items:
        n = engine.count_tokens(item.messages)
        if n + max_tokens > engine.max_context:
            bad.append(BadItem(item.id, f"prompt is {n} tokens; with max_tokens {max_tokens} it exceeds the "
                                        f"model context of {engine.max_context}", item.index))
        else:
            fits.append(item)
    return fits, bad


def read_items(config: GenerateConfig) -> list[PromptItem | BadItem]:
    """Every row of the prompt file, read and checked before any folder or model is touched: a file
    with no usable prompt is refused unless ``config.allow_empty``."""
    items = list(read_prompts(config.prompts, config.prompt_column, config.limit))
    require_usable(config.prompts, items, config.allow_empty)
    return items


def pending_items(items: list[PromptItem | BadItem], writer: RunWriter) -> list[PromptItem]:
    """Prompt items not yet done in ``writer``'s run; bad rows are recorded as errors on the way."""
    todo = []
    for it in items:
        if it.id in writer.done_ids:
            continue
        if isinstance(it, BadItem):
            writer.error(it.id, it.reason, index=it.index)
        else:
            todo.append(it)
    return todo


def base_spec(config: GenerateConfig, sampling: Sampling, engine: Engine | None = None) -> tuple[dict, dict]:
    """(spec, runtime) shared by every prompt-driven stage: what defines the output vs how it ran."""
    spec = {
        "input_sha256": file_sha256(config.prompts),
        "prompt_column": config.prompt_column,
        **provenance(config.engine, engine),
        "sampling": sampling.to_dict(),
    }
    runtime = {"batch_size": config.engine.batch_size, "base_urls": config.engine.base_urls, "limit": config.limit,
               "allow_empty": config.allow_empty}
    return spec, runtime


def run_batches(config: GenerateConfig, writer: RunWriter, items: list[PromptItem | BadItem], engine: Engine | None,
                progress: Callable[[int, int], None] | None,
                handle: Callable[[Engine, list[PromptItem]], None]) -> dict:
    """Feed the ``items`` the run still lacks to ``handle(engine, batch)``, batch by batch; finish the run.

    The engine is built only when there is work, and closed again if it was built here."""
    todo = pending_items(items, writer)
    if not todo:
        return writer.finish()
    own_engine = engine is None
    engine = engine or config.engine.build(seed=config.seed)
    report = progress or (lambda done, total: None)
    report(0, len(todo))
    done = 0
    try:
        writer.runtime["served"] = check_served(engine, writer.spec["model"])
        for batch in iter_batches(todo, config.engine.batch_size):
            handle(engine, batch)
            done += len(batch)
            report(done, len(todo))
    finally:
        if own_engine:
            engine.close()
    return writer.finish()


def run_generate(config: GenerateConfig, engine: Engine | None = None,
                 progress: Callable[[int, int], None] | None = None) -> dict:
    """Write ``config.out``; returns the run's counts. ``progress(done, total)`` is called per batch."""
    sampling = config.sampling()
    items = read_items(config)
    spec, runtime = base_spec(config, sampling, engine)
    writer = RunWriter(config.out, "generate", spec, RESPONSES, runtime=runtime, overwrite=config.overwrite)

    def handle(engine: Engine, batch: list[PromptItem]) -> None:
        fits, too_long = split_too_long(engine, batch, sampling.max_tokens)
        for bad in too_long:
            writer.error(bad.id, bad.reason, index=bad.index)
        outputs = engine.generate([it.messages for it in fits], sampling) if fits else []
        writer.write([{
            "id": it.id, "prompt": it.messages, "responses": [c.text for c in completions],
            "model": spec["model"], "sampling": canonical_json(spec["sampling"]),
        } for it, completions in zip(fits, outputs, strict=True)])

    return run_batches(config, writer, items, engine, progress, handle)
