"""``rlaif bench grpo``: seconds per GRPO step, and the code sandbox's throughput in parallel vs one at a time.

Steps: ``rlaif align grpo``'s trainer (align/grpo.py) on ``--model`` (default the embedded model)
with the ``gsm8k`` reward over ``rlaif data arithmetic`` problems, ``--steps`` optimizer steps of
``num_generations`` x prompts completions; each step's wall time comes from a trainer callback
(model load and the first step's warm-up are reported apart: ``first_step_s``).

Sandbox: ``--programs`` correct solutions of one small problem (each runs a short loop, so the
sandbox's own start-up is not all that is measured), run by ``align.rewards.code.run_tests_many``
one at a time and then with as many workers as CPUs; ``parallel_speedup`` is the ratio of their
programs/s, measured in the same command.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import typer

PROGRAM = """def total(n):
    s = 0
    for i in range(n):
        s += i * i % 7
    return s
"""
TESTS = ["assert total(10) == 19", "assert total(200000) >= 0"]  # literals: the code reward checks no other form


def sandbox_throughput(programs: int = 32) -> dict:
    """Programs/s of ``run_tests_many`` with one worker and with one per CPU; every run must pass."""
    from align.rewards.code import run_tests_many
    from align.rewards.sandbox import sandbox_unavailable

    why = sandbox_unavailable()
    if why:
        raise RuntimeError(why)
    jobs = [(PROGRAM, TESTS)] * programs
    out = {"programs": programs, "workers_parallel": os.cpu_count() or 1}
    for label, workers in (("serial", 1), ("parallel", None)):
        start = time.perf_counter()
        results = run_tests_many(jobs, max_workers=workers)
        seconds = time.perf_counter() - start
        bad = [r.status for r in results if r.status != "pass"]
        if bad:
            raise RuntimeError(f"sandbox bench: {len(bad)} of {programs} correct programs did not pass ({bad[0]})")
        out[f"programs_per_s_{label}"] = round(programs / seconds, 3)
    out["parallel_speedup"] = round(out["programs_per_s_parallel"] / out["programs_per_s_serial"], 3)
    return out


class _StepClock:
    """A transformers TrainerCallback that keeps each optimizer step's wall time."""

    def __new__(cls):
        from transformers import TrainerCallback

        class Clock(TrainerCallback):
            def __init__(self):
                self.times: list[float] = []
                self.last = None

            def on_step_begin(self, args, state, control, **kwargs):
                self.last = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                self.times.append(time.perf_counter() - self.last)

        return Clock()


def grpo_steps(steps: int, model: str, generations: int, completion_tokens: int) -> dict:
    """Wall seconds of each of ``steps`` GRPO steps (2 prompts x ``generations`` completions each)."""
    from align import build_recipe
    from align.grpo import build_trainer, load_grpo_data
    from tasks.build import make_arithmetic

    with tempfile.TemporaryDirectory(prefix="rlaif-bench-grpo-") as tmp:
        data = Path(tmp) / "arith"
        make_arithmetic(data, count=max(16, 2 * steps), seed=0)
        recipe = build_recipe("grpo", {
            "model": model, "data": str(data), "output_dir": str(Path(tmp) / "out"), "max_steps": steps,
            "learning_rate": 5e-6, "per_device_train_batch_size": 2 * generations, "num_generations": generations,
            "max_completion_length": completion_tokens, "reward_funcs": ["gsm8k"], "quiet": True, "seed": 0})
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # TRL prints its logs; stdout is for the result (--json)
            trainer = build_trainer(recipe, load_grpo_data(recipe))
            load_s = time.perf_counter() - start
            clock = _StepClock()
            trainer.add_callback(clock)
            trainer.train()
        rewards = [h.get("rewards/gsm8k/mean") for h in trainer.state.log_history if "loss" in h]
    later = clock.times[1:] or clock.times
    return {"steps": steps, "completions_per_step": 2 * generations, "max_completion_length": completion_tokens,
            "load_s": round(load_s, 2), "first_step_s": round(clock.times[0], 2),
            "seconds_per_step": round(sum(later) / len(later), 2), "step_s": [round(t, 2) for t in clock.times],
            "reward_gsm8k_per_step": rewards}


def bench_grpo(steps: int = 3, model: str = "smollm2-135m", programs: int = 32, generations: int = 4,
               completion_tokens: int = 48) -> dict:
    from bench.generate import machine_info
    from generator.models import resolve

    result = {"bench": "align.grpo", "model": model, "machine": machine_info()}
    result["sandbox"] = sandbox_throughput(programs)
    result["grpo"] = grpo_steps(steps, resolve(model), generations, completion_tokens)
    result["seconds_per_step"] = result["grpo"]["seconds_per_step"]
    return result


def register(bench_app: typer.Typer) -> None:
    @bench_app.command("grpo")
    def grpo(steps: int = typer.Option(3, "--steps", help="GRPO optimizer steps (the first one is reported apart)."),
             model: str = typer.Option("smollm2-135m", "--model", help="Policy: smollm2-135m, a folder or a Hub id."),
             programs: int = typer.Option(32, "--programs", help="Sandboxed programs per throughput run."),
             generations: int = typer.Option(4, "--generations", help="Completions per prompt (2 prompts a step)."),
             completion_tokens: int = typer.Option(48, "--completion-tokens", help="Most tokens per completion."),
             as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
        """Seconds per GRPO step on the embedded model, and sandbox programs/s: parallel vs one at a time."""
        from bench.args import BenchArgumentError, require_positive
        from bench.generate import describe_machine
        from generator.models import check_local_model

        require_positive(steps=steps, programs=programs, completion_tokens=completion_tokens)
        if generations < 2:
            raise BenchArgumentError(f"--generations must be at least 2 (a GRPO group; got {generations})")
        check_local_model(model)
        result = bench_grpo(steps, model, programs, generations, completion_tokens)
        if as_json:
            typer.echo(json.dumps(result))
            return
        s, g = result["sandbox"], result["grpo"]
        typer.echo(describe_machine(result["machine"]))
        typer.echo(f"GRPO on {model}: {g['seconds_per_step']} s/step ({g['completions_per_step']} completions x "
                   f"<= {g['max_completion_length']} tokens; first step {g['first_step_s']} s, load {g['load_s']} s)")
        typer.echo(f"sandbox: {s['programs_per_s_serial']} programs/s one at a time, {s['programs_per_s_parallel']} "
                   f"with {s['workers_parallel']} workers (x{s['parallel_speedup']})")
