"""Options that several commands share (``rlaif generate``, ``rlaif revise``, ``rlaif judge``, ``rlaif judge-eval``):
one definition each; their values go to the engine settings of generator/engines/options.py."""

from __future__ import annotations

from pathlib import Path

import typer

PROMPTS = typer.Option(..., "--prompts", help="Prompt file: jsonl/json/parquet/csv (.gz ok); text, messages or HH-RLHF.")
OUT = typer.Option(..., "--out", help="Run directory (resumed when it already holds this spec).")
MODEL = typer.Option("smollm2-135m", "--model", help="Embedded model name, local folder or Hub id.")
ENGINE = typer.Option("auto", "--engine", help="auto | vllm | openai | transformers | fake | an 'rlaif.engines' entry "
                                               "point | module:Class (a generator.engines.base.EngineBase subclass).")
BASE_URL = typer.Option(None, "--base-url", help="OpenAI-compatible server URL; repeat for several replicas "
                                                 "(--engine auto then means openai; other engines refuse it).")
REPLICAS = typer.Option(None, "--replicas", help="--engine ray: vLLM server replicas placed as Ray actors "
                                                  "(default 1; RAY_ADDRESS names the cluster).")
NUM_GPUS = typer.Option(None, "--num-gpus", help="--engine ray: GPUs of each replica (default 0: CPU servers).")
BATCH = typer.Option(32, "--batch-size", help="Prompts per engine call and per shard (not part of the spec).")
QUIET = typer.Option(False, "--quiet", help="No progress bar.")
TEMPLATES = typer.Option(None, "--templates", help="Folder of .jinja files shadowing the built-ins.")
JUDGE_MODEL = typer.Option("smollm2-135m", "--model", help="Judge model: embedded name, folder or Hub id.")
ALLOW_EMPTY = typer.Option(False, "--allow-empty", help="Accept a prompt file with no usable prompt (an empty run) "
                                                        "instead of refusing it.")


def engine_options(model, engine, base_url, batch_size, replicas=None, num_gpus=None):
    from generator.engines.options import EngineOptions

    return EngineOptions(model=model, engine=engine, base_urls=base_url or [], batch_size=batch_size,
                         replicas=replicas, num_gpus=num_gpus)


def summary(out: Path, counts: dict) -> str:
    rows = ", ".join(f"{v} {k}" for k, v in counts.items())
    return f"{out}: {rows}"
