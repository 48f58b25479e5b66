"""Run under ``accelerate launch`` by tests/test_ppo_processes.py: PPO on a recipe file, writing what
each process holds so the test can compare processes and runs.

    python ppo_processes_worker.py RECIPE.yaml OUT_DIR kill|resume

``kill``: train until the first checkpoint is written, record each rank's Adam state, then exit 3
(a killed run). ``resume``: record each rank's Adam state right after the checkpoint is loaded, train
to the end, record again with the DeepSpeed engine's settings when there is one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def adam_state(optimizer) -> dict[str, torch.Tensor]:
    """This rank's Adam moments (its shard under ZeRO) as flat tensors, and its step count."""
    inner = optimizer.optimizer  # accelerate's wrapper -> torch AdamW, or DeepSpeed's ZeRO optimizer
    inner = getattr(inner, "optimizer", inner)  # ZeRO's own torch AdamW over this rank's partition
    states = [inner.state[p] for group in inner.param_groups for p in group["params"] if p in inner.state]
    return {"exp_avg": torch.cat([s["exp_avg"].flatten() for s in states]),
            "exp_avg_sq": torch.cat([s["exp_avg_sq"].flatten() for s in states]),
            "step": torch.tensor([float(s["step"]) for s in states])}


def main(recipe_file: str, out: str, mode: str) -> None:
    from align import load_recipe
    from align.ppo import state, trainer

    out_dir = Path(out)
    recipe = load_recipe("ppo", recipe_file)
    held: dict = {}
    real_setup, real_save, real_load = trainer.setup, state.save, state.load_weights

    def dump(ctx, name: str) -> None:
        rank = ctx.accelerator.process_index
        torch.save(adam_state(ctx.optimizer), out_dir / f"adam-{name}-{rank}.pt")

    def setup(r):
        held["ctx"] = real_setup(r)
        return held["ctx"]

    def save_then_die(ctx, step, history):
        real_save(ctx, step, history)
        dump(ctx, "saved")
        raise SystemExit(3)

    def load_and_record(ctx):
        real_load(ctx)
        dump(ctx, "loaded")

    trainer.setup = setup
    if mode == "kill":
        state.save = save_then_die
    else:
        state.load_weights = load_and_record
    metrics = trainer.train(recipe)
    ctx = held["ctx"]
    dump(ctx, "end")
    engine = ctx.model if hasattr(ctx.model, "gradient_clipping") else None
    info = {"world_size": ctx.accelerator.num_processes, "distributed_type": str(ctx.accelerator.distributed_type),
            "resumed_from": metrics.get("resumed_from") if ctx.accelerator.is_main_process else None,
            "engine": None if engine is None else {
                "gradient_clipping": engine.gradient_clipping(), "global_steps": engine.global_steps,
                "gradient_accumulation_steps": engine.gradient_accumulation_steps(),
                "zero_stage": engine.zero_optimization_stage()}}
    (out_dir / f"info-{ctx.accelerator.process_index}.json").write_text(json.dumps(info))


if __name__ == "__main__":
    main(*sys.argv[1:])
