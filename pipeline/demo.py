"""``rlaif demo``: the whole loop (``rlaif run``, pipeline/loop.py) on the embedded defaults, small
enough for a 2-core CPU.

16 bundled prompts (pipeline/data/demo_prompts.jsonl: harmful and benign requests, our own text) get two
responses each from the embedded model and one SL-CAI critique -> revision round; the constitution
judge labels the response pairs; a short DPO run (soft labels) trains the model on them; eval compares
the trained model with the model it started from under the same judge; ``<out>/report.md`` says what
happened. ``DEMO`` is the recipe, the same as recipes/pipeline-cpu.yaml (tests/test_pipeline.py
checks it). A re-run reuses what finished and resumes what did not.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

DEMO = {
    "name": "SL-CAI + RL-CAI (DPO) on the embedded model",
    "model": "smollm2-135m",
    "prompts": None,
    "stages": ["generate", "revise", "judge", "dpo", "eval"],
    "engine": {"engine": "auto", "batch_size": 16},
    "generate": {"n": 2, "max_tokens": 96, "temperature": 0.8, "seed": 0},
    "revise": {"rounds": 1, "max_tokens": 96, "temperature": 0.0},
    "judge": {"principles_per_pair": 4},
    "dpo": {"max_steps": 8, "learning_rate": 5.0e-6, "per_device_train_batch_size": 4, "max_length": 384,
            "beta": 0.1, "soft_labels": True},
    "eval": {"max_tokens": 96},
}


def demo_recipe(out: Path, model: str, engine: str):
    from pipeline.recipe import PipelineRecipe

    raw = {**DEMO, "root": str(out), "model": model, "engine": {**DEMO["engine"], "engine": engine}}
    return PipelineRecipe.model_validate(raw)


def run_demo(out: Path, model: str, engine_name: str, say: Callable[[str], None], start: str | None = None) -> None:
    import json

    from pipeline.loop import run_pipeline
    from pipeline.stages import build_all

    recipe = demo_recipe(out, model, engine_name)
    build_all(recipe)  # every stage's options checked before anything runs
    run_pipeline(recipe, start=start, say=say)
    metrics = out / "eval" / "metrics.json"
    if metrics.is_file():
        m = json.loads(metrics.read_text())
        w = m.get("win_rate") or {}
        if w.get("value") is not None:
            say(f"\nwin-rate of the DPO model against {model} under the constitution judge: {w['value']:.3f} "
                f"[{w['lo']:.3f}, {w['hi']:.3f}] over {m.get('n_prompts')} prompts")
    say(f"read the report: {out / 'report.md'}")
