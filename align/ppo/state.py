"""What PPO writes: metrics.jsonl (one line per step, as it goes), checkpoints that a killed run resumes
from, and at the end the policy, metrics.json, the curves and the model card (as the other align methods).

Checkpoints live outside the temp folder the run writes into (``PPORecipe.checkpoints``, beside
output_dir), because a killed run's temp folder is abandoned: ``step-N/`` holds ``accelerate/`` (policy
+ value weights, optimizer states and random states, written by ``Accelerator.save_state`` on every
rank, so that under DeepSpeed ZeRO each rank's optimizer shard is kept), ``state.pt`` (KL coefficient,
reward moments) and the metrics so far. It is written as a whole folder (``plumbing.atomic.atomic_dir``),
then the ``latest`` file names it (``plumbing.atomic.write_text``), then older ones are removed; a kill
at any moment leaves a complete checkpoint or the previous one.
A checkpoint made by another recipe (anything but max_steps, save_steps, quiet) is refused.
Rollouts depend only on (seed, step, position) and the weights, so a resumed run continues exactly
(tests/test_ppo_train.py::test_resume_continues_where_the_failed_run_stopped; each process's optimizer
state: tests/test_ppo_processes.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from align.config import RecipeError
from plumbing import atomic

log = logging.getLogger(__name__)

METRICS_JSONL = "metrics.jsonl"
ACCELERATE_STATE = "accelerate"  # the folder of Accelerator.save_state inside a checkpoint
RUNTIME_KEYS = ("max_steps", "save_steps", "quiet", "output_dir", "checkpoint_dir")


def recipe_key(recipe) -> str:
    from plumbing.hashing import sha256_of

    return sha256_of({k: v for k, v in recipe.model_dump(mode="json").items() if k not in RUNTIME_KEYS})


class MetricsWriter:
    """Appends each step's metrics to ``metrics.jsonl`` (rank 0) and keeps them for metrics.json."""

    def __init__(self, folder: str, history: list[dict], main: bool):
        self.path, self.history, self.main = Path(folder) / METRICS_JSONL, list(history), main
        if main:
            Path(folder).mkdir(parents=True, exist_ok=True)
            atomic.write_text(self.path, "".join(json.dumps(h) + "\n" for h in self.history))

    def add(self, stats: dict[str, Any]) -> None:
        self.history.append(stats)
        if self.main:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(stats) + "\n")
            log.info("step %d: reward %.4g, kl %.4g, %.1f s", stats["step"], stats["reward_mean"], stats["kl"],
                     stats["seconds"])


def save(ctx, step: int, history: list[dict]) -> None:
    """Checkpoint after ``step`` steps. Every rank writes its part through ``Accelerator.save_state``
    (under ZeRO each rank holds a shard of the optimizer state, and DeepSpeed's engine writes one
    file per rank; under DDP rank 0 writes the weights and optimizer, each rank its random states)
    into rank 0's temp folder, which rank 0 completes and renames into place."""
    from accelerate.utils import broadcast_object_list

    acc = ctx.accelerator
    root = ctx.recipe.checkpoints
    main = acc.is_main_process
    if main:
        root.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_dir(root / f"step-{step}") if main else contextlib.nullcontext() as tmp:
        tmp = Path(broadcast_object_list([str(tmp) if main else None])[0])
        acc.save_state(str(tmp / ACCELERATE_STATE), safe_serialization=False)
        acc.wait_for_everyone()
        if main:
            torch.save({"step": step, "kl_coef": ctx.kl.value, "moments": ctx.moments.state(),
                        "recipe_key": recipe_key(ctx.recipe)}, tmp / "state.pt")
            (tmp / METRICS_JSONL).write_text("".join(json.dumps(h) + "\n" for h in history))
    if main:
        atomic.write_text(root / "latest", f"step-{step}\n")
        for old in root.glob("step-*"):
            if old.name != f"step-{step}":
                shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint step %d -> %s", step, root)
    acc.wait_for_everyone()


def _latest(root: Path) -> Path | None:
    try:
        name = (root / "latest").read_text().strip()
    except OSError:
        return None
    folder = root / name
    return folder if (folder / "state.pt").is_file() else None


def resume(ctx) -> tuple[int, list[dict]]:
    """Read the latest checkpoint's step, KL coefficient, reward moments and metrics; (steps done,
    metrics so far). The weights and optimizer states load after ``prepare`` (``load_weights``)."""
    folder = _latest(ctx.recipe.checkpoints)
    if folder is None:
        return 0, []
    saved = torch.load(folder / "state.pt", map_location="cpu", weights_only=False)
    if saved["recipe_key"] != recipe_key(ctx.recipe):
        raise RecipeError(f"{ctx.recipe.checkpoints}: a checkpoint of another PPO recipe; restore that recipe to "
                          f"resume, or delete the folder to start over")
    if not (folder / ACCELERATE_STATE).is_dir():
        raise RecipeError(f"{folder}: a checkpoint of an older rlaif (one file, rank 0's optimizer state only); "
                          f"delete {ctx.recipe.checkpoints} to start over")
    ctx.kl.value = saved["kl_coef"]
    ctx.moments.load(saved["moments"])
    ctx._resume_from = folder
    history = [json.loads(line) for line in (folder / METRICS_JSONL).read_text().splitlines() if line.strip()]
    log.info("resuming from %s (step %d)", folder, saved["step"])
    return saved["step"], history


def load_weights(ctx) -> None:
    """Every rank loads its weights and optimizer state (its shard under ZeRO) from the checkpoint."""
    ctx.accelerator.load_state(str(ctx._resume_from / ACCELERATE_STATE))
    del ctx._resume_from


def evaluate(ctx, rows: list[dict], step: int) -> dict[str, float]:
    """Mean reward, KL and length of the policy's responses to the held-out prompts (each process an
    equal share; the KL controller and reward moments are left as training left them)."""
    from align.ppo.rollout import make_batch, row_seed

    acc = ctx.accelerator
    share = len(rows) // acc.num_processes
    if share == 0:
        return {}
    mine = rows[acc.process_index * share:(acc.process_index + 1) * share]
    kl_value, moments = ctx.kl.value, ctx.moments.state()
    ctx.log_samples = False
    _, stats = make_batch(ctx, mine, [row_seed(ctx.recipe.seed + 1, step, acc.process_index * share + i)
                                      for i in range(share)])
    ctx.kl.value = kl_value
    ctx.moments.load(moments)
    return {"eval_reward": stats["reward_mean"], "eval_kl": stats["kl"],
            "eval_response_length": stats["response_length"], "eval_prompts": share * acc.num_processes}


def _mean(history: list[dict], key: str, part: slice) -> float | None:
    vals = [h[key] for h in history[part] if isinstance(h.get(key), int | float)]
    return sum(vals) / len(vals) if vals else None


def finish(ctx, data, history: list[dict], steps: int, start: int) -> dict[str, Any]:
    """Save the policy and tokenizer, write metrics.json, curves and card (rank 0), drop the checkpoints."""
    from align.card import write_card
    from align.ppo.plot import plot_curves

    recipe, acc = ctx.recipe, ctx.accelerator
    metrics: dict[str, Any] = {"train": {"train_runtime": sum(h.get("seconds", 0.0) for h in history)}}
    if data.eval:
        metrics["eval"] = evaluate(ctx, data.eval, steps)
    acc.wait_for_everyone()
    out = Path(recipe.work_dir)
    if not acc.is_main_process:
        return metrics
    out.mkdir(parents=True, exist_ok=True)
    policy = acc.unwrap_model(ctx.model).policy
    policy.save_pretrained(str(out), safe_serialization=True)
    ctx.tokenizer.save_pretrained(str(out))
    summary = {
        "reward_first10_mean": _mean(history, "reward_mean", slice(0, 10)),
        "reward_last10_mean": _mean(history, "reward_mean", slice(-10, None)),
        "kl_first10_mean": _mean(history, "kl", slice(0, 10)),
        "kl_last10_mean": _mean(history, "kl", slice(-10, None)),
    }
    metrics["train"].update({k: v for k, v in summary.items() if v is not None})
    last = {k: v for k, v in (history[-1] if history else {}).items() if isinstance(v, int | float)}
    metrics.update({"method": recipe.method, "global_step": steps, "world_size": acc.num_processes,
                    "resumed_from": start or None, **summary, "last_train_log": last, "log_history": history})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    plot_curves(history, out)
    write_card(out, recipe, data, metrics)
    shutil.rmtree(recipe.checkpoints, ignore_errors=True)
    log.info("wrote ppo policy, card, metrics and curves to %s", out)
    return metrics
