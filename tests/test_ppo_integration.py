"""PPO on the real stack: 4 HH-RLHF prompts -> `rlaif generate` and `rlaif judge` on the embedded model
(the session's vLLM server) -> `rlaif align reward` (tiny model, same tokenizer) -> `rlaif align ppo` on
the embedded SmolLM2-135M: 4 steps, a SIGKILL right after the step-2 checkpoint, and the same command
again resumes at step 3. Then two processes (DDP over gloo) give the first-step loss of one process on
the same global batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import BASE_ENV, hh_prompt_file, logged_cli

# Setup (a vLLM server, generate, judge, reward model) and 4 PPO steps on SmolLM2-135M: 15 min on a shared 2-core box.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, shared_data, tiny_model_dir, vllm_server) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("ppo-int")
    prompts = hh_prompt_file(shared_data, tmp / "hh-4.jsonl", 4)

    rlaif = logged_cli(tmp)

    common = ["--engine", "openai", "--base-url", vllm_server, "--model", "smollm2-135m", "--quiet"]
    rlaif("generate", "--prompts", prompts, "--out", tmp / "gen", "--n", 2, "--max-tokens", 24, *common)
    rlaif("judge", "--input", tmp / "gen", "--out", tmp / "prefs", *common)
    rlaif("align", "reward", "--data", tmp / "prefs", "--model", tiny_model_dir, "--out", tmp / "rm",
          "--max-steps", 2, "--quiet", "--set", "max_length=256", "--set", "data.eval_ratio=0")
    return {"tmp": tmp, "gen": tmp / "gen", "rm": tmp / "rm"}


def _ppo_args(stack, out: Path, *extra) -> list[str]:
    return ["align", "ppo", "--prompts", str(stack["gen"]), "--reward-model", str(stack["rm"]), "--model",
            "smollm2-135m", "--out", str(out), "--quiet", "--set", "max_new_tokens=12", "--set", "max_length=64", "--set",
            "per_device_train_batch_size=2", "--set", "num_ppo_epochs=1", "--set", "learning_rate=1e-6", *extra]


def test_embedded_model_four_steps_killed_after_a_checkpoint_resumes(stack, run_cli):
    out = stack["tmp"] / "ppo"
    args = _ppo_args(stack, out, "--max-steps", "4", "--set", "save_steps=2")
    ckpt = stack["tmp"] / ".ppo.ppo-checkpoints"
    with open(stack["tmp"] / "killed.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "rlaif", *args], stdout=log, stderr=log, cwd=str(ROOT),
                                env=BASE_ENV, start_new_session=True)
    deadline = time.time() + 900
    while not (ckpt / "latest").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, (stack["tmp"] / "killed.log").read_text()[-3000:]
    assert (ckpt / "latest").read_text().strip() == "step-2" and not out.exists()

    res = run_cli(*args, timeout=1200)
    assert res.returncode == 0, res.stderr[-4000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from"] == 2 and metrics["global_step"] == 4
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert (out / "model.safetensors").is_file() and (out / "training_curve.png").stat().st_size > 1000
    assert json.loads((out / "manifest.json").read_text())["stage"] == "align-ppo"
    assert not ckpt.exists()


def test_two_processes_match_one(stack, run_cli):
    """One process with 4 responses per micro-batch and two with 2 each: the same global batch, the same
    responses (align/ppo/models.py seeds each response by its place), so the same first-step loss."""
    losses = {}
    for procs, per_device in ((1, 4), (2, 2)):
        out = stack["tmp"] / f"ppo-{procs}"
        res = run_cli(*_ppo_args(stack, out, "--max-steps", "1", "--num-processes", str(procs), "--set",
                                 f"per_device_train_batch_size={per_device}", "--set", "data.eval_ratio=0"),
                      timeout=1200)
        assert res.returncode == 0, res.stderr[-4000:]
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["world_size"] == procs
        losses[procs] = metrics["log_history"][0]
    for key in ("reward_mean", "kl", "loss", "policy_loss", "value_loss"):
        assert losses[2][key] == pytest.approx(losses[1][key], rel=1e-3, abs=1e-5), key
