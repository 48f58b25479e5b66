"""``rlaif bench dpo``: DPO steps/s with and without ``precompute_ref_log_probs``, and their ratio.

Both runs use the same data (a toy preference run, or ``--data`` RUN_DIR), the same model and
the same recipe; only ``precompute_ref_log_probs`` differs. Steps/s is measured on the training
loop (TRL's ``train_runtime``); the one-off reference pass of the precomputed run is reported
separately as ``precompute_s`` (it is paid once per dataset).
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import typer

GOOD = ["apple", "sunny", "gentle", "kind", "bright"]
BAD = ["stone", "rusty", "grim", "cold", "dark"]
TOPICS = ["the weather", "a walk", "breakfast", "a friend", "the garden", "music", "a book", "the sea"]


def write_toy_preference_run(out_dir: str | Path, n: int = 64, seed: int = 0, eval_n: int = 0,
                             rejected_words: list[str] = BAD) -> Path:
    """A real ``judge`` run whose chosen replies use one word family and rejected another.

    The property is visible to any model that reads the tokens, so a reward model must separate
    the held-out pairs and DPO must move its implicit reward margin up. ``p_chosen`` varies in
    [0.6, 1.0] so soft-label code paths see real values.
    """
    from judge.records import PREFERENCES
    from plumbing.runs import RunWriter, item_id

    rng = random.Random(seed)
    writer = RunWriter(out_dir, "judge", {"toy": "preferences", "seed": seed, "n": n},
                       PREFERENCES, overwrite=True)

    def row(i: int) -> dict:
        prompt = [{"role": "user", "content": f"Tell me about {rng.choice(TOPICS)} ({i})."}]
        good = " ".join(rng.choice(GOOD) for _ in range(6))
        bad = " ".join(rng.choice(rejected_words) for _ in range(6))
        return {"id": item_id("toy", seed, i), "prompt": prompt,
                "chosen": [{"role": "assistant", "content": good}],
                "rejected": [{"role": "assistant", "content": bad}],
                "p_chosen": round(rng.uniform(0.6, 1.0), 3), "votes": [], "principle_ids": ["toy"],
                "position_consistent": True, "judge_model": "toy", "constitution_sha256": "0" * 64,
                "template_sha256": "0" * 64}

    writer.write([row(i) for i in range(n)], split="train")
    if eval_n:
        writer.write([row(n + i) for i in range(eval_n)], split="test")
    writer.finish()
    return Path(out_dir)


def tiny_model(out_dir: str | Path, base: str) -> str:
    """A 2-layer, hidden-64 random Llama with ``base``'s tokenizer (as tests/conftest.py builds it)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(base)
    config.update({"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 1024})
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(base).save_pretrained(out_dir)
    return str(out_dir)


def _one(data: str, model: str, out: Path, steps: int, precompute: bool) -> dict:
    from align import build_recipe
    from align.dpo import train

    recipe = build_recipe("dpo", {
        "model": model, "data": data, "output_dir": str(out), "max_steps": steps, "learning_rate": 1e-5,
        "per_device_train_batch_size": 4, "max_length": 128, "quiet": True,
        "precompute_ref_log_probs": precompute, "trl": {"logging_steps": max(1, steps // 5)}})
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # TRL prints its logs; stdout is for the result (--json)
        metrics = train(recipe)
    total = time.perf_counter() - start
    runtime = metrics["train"]["train_runtime"]
    return {"steps_per_s": steps / runtime, "train_s": runtime, "total_s": total}


def bench_dpo(steps: int = 20, data: str | None = None, model: str = "tiny") -> dict:
    from generator.models import resolve

    with tempfile.TemporaryDirectory(prefix="rlaif-bench-dpo-") as tmp:
        tmp_path = Path(tmp)
        data = data or str(write_toy_preference_run(tmp_path / "data", n=max(64, steps * 4)))
        model_path = tiny_model(tmp_path / "tiny", resolve(None)) if model == "tiny" else resolve(model)
        ref = _one(data, model_path, tmp_path / "ref", steps, precompute=False)
        pre = _one(data, model_path, tmp_path / "pre", steps, precompute=True)
    return {"bench": "align.dpo", "model": model, "steps": steps,
            "steps_per_s_ref_model": round(ref["steps_per_s"], 4),
            "steps_per_s_precomputed": round(pre["steps_per_s"], 4),
            "ratio": round(pre["steps_per_s"] / ref["steps_per_s"], 3),
            "precompute_s": round(pre["total_s"] - ref["total_s"] + ref["train_s"] - pre["train_s"], 2),
            "wall_s_ref_model": round(ref["total_s"], 2), "wall_s_precomputed": round(pre["total_s"], 2)}


def register(bench_app: typer.Typer) -> None:
    @bench_app.command("dpo")
    def dpo(steps: int = typer.Option(20, "--steps", help="Optimizer steps per run."),
            data: str = typer.Option(None, "--data", help="A judge run directory (default: a toy one)."),
            model: str = typer.Option("tiny", "--model", help="tiny (random 2-layer), smollm2-135m, or a path."),
            as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
        """DPO steps/s with the reference model in the loop vs precompute_ref_log_probs, and the ratio."""
        from bench.args import require_positive

        require_positive(steps=steps)
        result = bench_dpo(steps=steps, data=data, model=model)
        if as_json:
            typer.echo(json.dumps(result))
            return
        typer.echo(f"DPO on {model}, {steps} steps: {result['steps_per_s_ref_model']:.3f} steps/s with the "
                   f"reference model, {result['steps_per_s_precomputed']:.3f} steps/s precomputed "
                   f"(x{result['ratio']:.2f}; precompute pass {result['precompute_s']:.1f} s)")
