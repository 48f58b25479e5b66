"""Training on a toy preference run whose chosen replies carry a visible property (word family).

Tiny random Llama (tests/conftest.py), CPU, ~20 steps: the numbers must move the right way.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align import build_recipe
from bench.align import write_toy_preference_run


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> str:
    return str(write_toy_preference_run(tmp_path_factory.mktemp("toy") / "judge", n=80, seed=0, eval_n=20))


def _recipe(method: str, model: str, path: str, out: Path, **fields):
    raw = {"model": model, "data": {"path": path, "eval_split": "test"}, "output_dir": str(out),
           "per_device_train_batch_size": 8, "max_length": 64, "quiet": True, "seed": 0, **fields}
    return build_recipe(method, raw)


def _logged(metrics: dict, key: str) -> list[float]:
    return [h[key] for h in metrics["log_history"] if key in h and "loss" in h]


@pytest.mark.parametrize("soft", [False, True])
def test_reward_model_learns_the_visible_property(tiny_model_dir, toy_run, tmp_path, soft):
    from align.reward import train

    out = tmp_path / "rm"
    metrics = train(_recipe("reward", tiny_model_dir, toy_run, out, max_steps=20, learning_rate=1e-3,
                            soft_labels=soft))
    acc = metrics["eval"]["eval_accuracy"]
    assert acc >= 0.9, metrics["eval"]
    losses = _logged(metrics, "loss")
    assert len(losses) == 20 and sum(losses[-5:]) / 5 < sum(losses[:5]) / 5, losses
    # saved as a 1-output sequence classifier that transformers reloads
    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 1 and model.config.pad_token_id is not None
    assert (out / "README.md").is_file() and (out / "training_curve.png").stat().st_size > 1000
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["eval"]["eval_accuracy"] == acc


@pytest.mark.parametrize("soft", [False, True])
def test_dpo_loss_falls_and_margin_rises(tiny_model_dir, toy_run, tmp_path, soft):
    from align.dpo import train

    metrics = train(_recipe("dpo", tiny_model_dir, toy_run, tmp_path / "dpo", max_steps=16, learning_rate=5e-4,
                            beta=0.1, soft_labels=soft, per_device_train_batch_size=4))
    losses, margins = _logged(metrics, "loss"), _logged(metrics, "rewards/margins")
    assert len(losses) == 16 and len(margins) == 16
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.05, losses
    assert sum(margins[-5:]) / 5 > sum(margins[:5]) / 5 + 0.1, margins
    assert metrics["eval"]["eval_rewards/margins"] > 0
    if soft:  # the soft path really ran: it logs the mean p_chosen of its batches
        assert all(0.6 <= h["p_chosen"] <= 1.0 for h in metrics["log_history"] if "p_chosen" in h)


def test_sft_trains_on_a_revise_run(tiny_model_dir, tmp_path):
    from align.sft import train
    from generator.records import REVISIONS
    from plumbing.runs import RunWriter

    writer = RunWriter(tmp_path / "revise", "revise", {"toy": "revisions"}, REVISIONS)
    rows = [{"id": f"r{i}", "prompt": [{"role": "user", "content": f"Question {i}?"}],
             "messages": [{"role": "user", "content": f"Question {i}?"},
                          {"role": "assistant", "content": "I am glad to help kindly."}],
             "init_response": "no", "critiques": ["rude"], "revisions": ["I am glad to help kindly."],
             "principle_ids": ["p"], "model": "toy", "constitution_sha256": "c" * 64, "template_sha256": "t" * 64}
            for i in range(24)]
    writer.write(rows)
    writer.finish()
    out = tmp_path / "sft"
    metrics = train(_recipe("sft", tiny_model_dir, "unused", out, max_steps=10, per_device_train_batch_size=4,
                            learning_rate=1e-2, data={"path": str(tmp_path / "revise"), "eval_ratio": 0.25}))
    losses = _logged(metrics, "loss")
    assert losses[-1] < losses[0] - 2.0, losses  # random init starts at ln(49152) = 10.8
    assert "eval_loss" in metrics["eval"]
    card = (out / "README.md").read_text()
    assert "c" * 64 in card and "revise" in card and tiny_model_dir in card


def test_precomputed_reference_gives_the_same_losses(tiny_model_dir, toy_run, tmp_path):
    """precompute_ref_log_probs only moves the reference pass before training: same losses step by step,
    with the soft-label loss too (its p_chosen must reach the loss, not the reference pass)."""
    from align.dpo import train

    runs = {}
    for precompute in (False, True):
        metrics = train(_recipe("dpo", tiny_model_dir, toy_run, tmp_path / f"dpo-{precompute}", max_steps=3,
                                learning_rate=5e-4, soft_labels=True, per_device_train_batch_size=4,
                                precompute_ref_log_probs=precompute))
        runs[precompute] = _logged(metrics, "loss")
    assert len(runs[True]) == 3
    assert runs[True] == pytest.approx(runs[False], abs=1e-4)
    assert runs[True][2] != pytest.approx(runs[True][0], abs=1e-4)  # the policy did move away from the reference
