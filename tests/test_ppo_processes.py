"""PPO on 2 processes under ``accelerate launch``: DDP over gloo, and DeepSpeed ZeRO-2 through
recipes/accelerate/zero2.yaml on the CPU (DS_ACCELERATOR=cpu; skipped where deepspeed is not installed,
it is not a dependency of rlaif). A run killed after its first checkpoint resumes with each rank's Adam
state as it was (under ZeRO each rank holds a different shard of it), Adam steps once per accumulation
window, and DeepSpeed's engine clips at the recipe's max_grad_norm. The toy task of
tests/test_ppo_train.py; each process's record is written by tests/ppo_processes_worker.py."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import BASE_ENV

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("ppo_processes_worker.py")
STEPS, EPOCHS, MINI_BATCHES, ACCUMULATION = 2, 2, 2, 2


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, str]:
    from bench.ppo import build_toy_task

    return build_toy_task(tmp_path_factory.mktemp("ppo-toy"))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_then_resume(toy: dict, folder: Path, accelerate_args: list[str], env: dict[str, str]) -> Path:
    """Train with a checkpoint after step 1, die there, then resume in fresh processes to step 2."""
    recipe = {"method": "ppo", "model": toy["policy"], "data": {"path": toy["prompts"]},
              "reward_model": toy["reward_model"], "output_dir": str(folder / "out"), "max_steps": STEPS,
              "save_steps": 1, "learning_rate": 1e-3, "max_new_tokens": 6, "temperature": 1.0,
              "per_device_train_batch_size": 2, "gradient_accumulation_steps": ACCUMULATION,
              "num_mini_batches": MINI_BATCHES, "num_ppo_epochs": EPOCHS, "max_grad_norm": 0.3,
              "missing_eos_penalty": 0.0, "quiet": True, "seed": 0}
    (folder / "ppo.yaml").write_text(yaml.safe_dump(recipe))
    env = {**BASE_ENV, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), env.get(
        "PYTHONPATH", BASE_ENV.get("PYTHONPATH", ""))]), **{k: v for k, v in env.items() if k != "PYTHONPATH"}}
    for mode, code in (("kill", 3), ("resume", 0)):
        res = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", *accelerate_args,
                              "--main_process_port", str(_port()), str(WORKER), str(folder / "ppo.yaml"), str(folder),
                              mode], capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
        assert (res.returncode == 0) == (code == 0), f"{mode}: exit {res.returncode}\n{res.stderr[-4000:]}"
    return folder


def _adam(folder: Path, name: str, rank: int) -> dict:
    import torch

    return torch.load(folder / f"adam-{name}-{rank}.pt")


def _check_each_rank_resumed(folder: Path) -> list[dict]:
    """Each rank's Adam state after loading equals what it held when the checkpoint was written; Adam
    stepped once per accumulation window: epochs x minibatches per PPO step."""
    import torch

    ends = []
    for rank in (0, 1):
        saved, loaded, end = (_adam(folder, name, rank) for name in ("saved", "loaded", "end"))
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(saved[key], loaded[key]), (rank, key)
        assert saved["exp_avg"].abs().max() > 0
        assert set(saved["step"].tolist()) == {EPOCHS * MINI_BATCHES}, saved["step"]
        assert set(end["step"].tolist()) == {STEPS * EPOCHS * MINI_BATCHES}, end["step"]
        ends.append(end)
    info = json.loads((folder / "info-0.json").read_text())
    assert info["world_size"] == 2 and info["resumed_from"] == 1
    return ends


def test_ddp_resume_restores_each_ranks_optimizer(toy, tmp_path):
    import torch

    folder = _kill_then_resume(toy, tmp_path, ["--config_file", str(ROOT / "recipes/accelerate/cpu-ddp.yaml")], {})
    ends = _check_each_rank_resumed(folder)
    assert torch.equal(ends[0]["exp_avg"], ends[1]["exp_avg"])  # DDP: every rank holds the whole state
    assert json.loads((folder / "info-0.json").read_text())["engine"] is None


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed (not a dependency; `pip install deepspeed` runs this on the CPU)")
def test_zero2_on_cpu_accumulates_clips_and_resumes_each_shard(toy, tmp_path):
    """The shipped ZeRO-2 config, on 2 CPU processes: DeepSpeed's engine takes the recipe's accumulation
    and clipping, and each rank gets its own optimizer shard back."""
    folder = _kill_then_resume(toy, tmp_path, ["--config_file", str(ROOT / "recipes/accelerate/zero2.yaml"),
                                               "--num_processes", "2", "--mixed_precision", "no"],
                               {"DS_ACCELERATOR": "cpu"})
    ends = _check_each_rank_resumed(folder)
    for rank in (0, 1):
        info = json.loads((folder / f"info-{rank}.json").read_text())
        assert info["distributed_type"] == "DistributedType.DEEPSPEED", info
        assert info["engine"] == {"gradient_clipping": 0.3, "global_steps": STEPS * EPOCHS * MINI_BATCHES,
                                  "gradient_accumulation_steps": ACCUMULATION, "zero_stage": 2}, info
    # ZeRO-2: the two ranks hold different halves of the Adam state
    a, b = ends[0]["exp_avg"], ends[1]["exp_avg"]
    assert a.numel() != b.numel() or not bool((a == b).all())


def test_deepspeed_config_takes_the_recipes_batch_accumulation_and_clipping():
    """``auto`` or absent keys get the recipe's values; a value the DeepSpeed config sets otherwise is
    refused in one line naming it (accelerate 1.16 would clip at 1.0 and could not fill the micro-batch)."""
    from align import build_recipe
    from align.ppo.trainer import deepspeed_settings
    from plumbing.recipes import RecipeError

    recipe = build_recipe("ppo", {"data": "prompts.jsonl", "output_dir": "m", "reward_funcs": ["length"],
                                  "per_device_train_batch_size": 2, "gradient_accumulation_steps": 4,
                                  "max_grad_norm": 0.3})
    config = {"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "gradient_clipping": "auto",
              "zero_optimization": {"stage": 2}}
    deepspeed_settings(config, recipe, world=8)
    assert config == {"train_batch_size": 64, "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 4,
                      "gradient_clipping": 0.3, "zero_optimization": {"stage": 2}}
    deepspeed_settings(dict(config), recipe, world=8)  # the same values again are fine
    with pytest.raises(RecipeError, match="sets gradient_clipping: 1.0, but the PPO recipe's max_grad_norm is 0.3"):
        deepspeed_settings({"gradient_clipping": 1.0}, recipe, world=8)
    with pytest.raises(RecipeError, match="gradient_accumulation_steps: 1, but"):
        deepspeed_settings({"gradient_accumulation_steps": 1}, recipe, world=8)
