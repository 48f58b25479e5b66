"""PPO on the toy task of bench/ppo.py (tiny SFT'd policy, tiny reward model that prefers one
word family): the reward rises, a 10x KL coefficient keeps the policy closer, gradient accumulation
and two processes give the update of one big batch, a failed run resumes from its checkpoint, a reward
function's None leaves its response out of the update (and a step without any verdict stops the run), and
bad recipes fail before any model loads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from align import build_recipe
from plumbing.recipes import RecipeError

STEPS = 40


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, str]:
    from bench.ppo import build_toy_task

    toy = build_toy_task(tmp_path_factory.mktemp("ppo-toy"))
    assert toy["rm_eval_accuracy"] >= 0.9  # the reward model sees the word family
    return toy


def _recipe(toy: dict, out: Path, **fields):
    raw = {"model": toy["policy"], "data": {"path": toy["prompts"], "eval_split": "test"}, "reward_model": toy["reward_model"], "output_dir": str(out),
           "max_steps": STEPS, "learning_rate": 1e-3, "max_new_tokens": 6, "temperature": 1.0,
           "per_device_train_batch_size": 4, "num_mini_batches": 2, "num_ppo_epochs": 4, "kl_coef": 0.05,
           "missing_eos_penalty": 0.0, "quiet": True, "seed": 0, **fields}
    return build_recipe("ppo", raw)


@pytest.fixture(scope="module")
def two_runs(toy, tmp_path_factory) -> dict[float, dict]:
    import align

    out = tmp_path_factory.mktemp("ppo-runs")
    runs = {kl: align.run(_recipe(toy, out / f"kl-{kl}", kl_coef=kl)) for kl in (0.05, 0.5)}
    runs["folder"] = out
    return runs


def test_reward_rises_on_the_toy_task(two_runs):
    m = two_runs[0.05]
    first, last = m["reward_first10_mean"], m["reward_last10_mean"]
    assert m["global_step"] == STEPS and len(m["log_history"]) == STEPS
    assert last > first + 0.3, (first, last)


def test_ten_times_the_kl_coefficient_ends_closer_to_the_reference(two_runs):
    small, big = two_runs[0.05]["kl_last10_mean"], two_runs[0.5]["kl_last10_mean"]
    assert big < small - 0.2, (small, big)


def test_every_step_is_logged_and_the_outputs_look_like_the_other_methods(two_runs):
    m = two_runs[0.05]
    for h in m["log_history"]:
        for key in ("reward_mean", "reward_std", "kl", "entropy", "clipfrac", "value_loss", "policy_loss", "approx_kl",
                    "response_length", "seconds", "rollout_s", "reward_s", "train_s", "kl_coef"):
            assert isinstance(h[key], float), (key, h)
        assert h["ppo_updates"] == 4 * 2 and h["early_stopped"] is False  # epochs x minibatches
    folder = two_runs["folder"] / "kl-0.05"
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == list(range(1, STEPS + 1))
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["method"] == "ppo" and saved["reward_last10_mean"] == m["reward_last10_mean"]
    assert {"eval_reward", "eval_kl"} <= set(saved["eval"])
    assert (folder / "training_curve.png").stat().st_size > 1000 and (folder / "model.safetensors").is_file()
    assert "rlaif align ppo" in (folder / "README.md").read_text()
    assert json.loads((folder / "manifest.json").read_text())["stage"] == "align-ppo"
    assert not any(p.name.endswith("ppo-checkpoints") for p in folder.parent.iterdir())


def _context(toy, tmp_path, **fields):
    from align.ppo import trainer

    ctx = trainer.setup(_recipe(toy, tmp_path / "unused", **fields))
    trainer.prepare(ctx)
    return ctx


def _batch(ctx, toy, n: int):
    from align.ppo.data import load_prompts
    from align.ppo.rollout import make_batch
    from align.ppo.trainer import row_seed

    rows = load_prompts(ctx.recipe).train[:n]
    return make_batch(ctx, rows, [row_seed(0, 0, i) for i in range(n)])


def test_gradient_accumulation_matches_one_big_batch(toy, tmp_path):
    """One minibatch of 4 responses as 1 x 4 or as 2 accumulated micro-batches of 2: the same update."""
    import torch

    from align.ppo.trainer import update

    results = []
    for micro, accum in ((4, 1), (2, 2)):
        ctx = _context(toy, tmp_path, per_device_train_batch_size=micro, gradient_accumulation_steps=accum,
                       num_mini_batches=1, num_ppo_epochs=1)
        batch, _ = _batch(ctx, toy, 4)
        params = list(ctx.accelerator.unwrap_model(ctx.model).parameters())
        grads, step = [], ctx.optimizer.step

        def record(*args, step=step, params=params, grads=grads, **kwargs):  # the gradient Adam is given
            grads.append(torch.cat([p.grad.flatten() for p in params if p.grad is not None]))
            return step(*args, **kwargs)

        ctx.optimizer.step = record
        stats = update(ctx, batch, step=0)
        results.append((stats, grads[0], batch))
    (a, ga, ba), (b, gb, bb) = results
    assert torch.equal(ba.responses, bb.responses)  # the same rollouts: sampling does not depend on batching
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-7)
    assert ga.abs().max() > 1e-3 and torch.allclose(ga, gb, rtol=1e-4, atol=1e-7)
    assert a["ppo_updates"] == b["ppo_updates"] == 1


def test_eos_penalty_and_reward_functions_replace_the_reward_model(toy, tmp_path):
    """No reward model: the score is the `length` reward; responses cut at the limit lose 0.5."""
    ctx = _context(toy, tmp_path, reward_model=None, reward_funcs=["length"], missing_eos_penalty=0.5,
                   max_new_tokens=2)
    assert ctx.rm is None
    _, stats = _batch(ctx, toy, 8)
    assert stats["eos_fraction"] < 1.0  # some responses hit the 2-token limit
    assert stats["score_mean"] == pytest.approx(stats["reward_mean"] - 0.5 * (1 - stats["eos_fraction"]), abs=1e-6)
    assert stats["rewards/length/scored"] == 1.0


def test_early_stop_and_adaptive_kl(toy, tmp_path):
    import align

    m = align.run(_recipe(toy, tmp_path / "out", max_steps=2, target_kl=1e-12, kl_target=0.01, kl_horizon=10))
    for h in m["log_history"]:  # the first update starts at the rollout policy (KL 0); the second sees KL > 0
        assert h["early_stopped"] is True and h["ppo_updates"] == 2 < 4 * 2, h
    coefs = [h["kl_coef"] for h in m["log_history"]]
    assert coefs[0] == 0.05 and coefs[1] != 0.05  # the controller moved beta after step 1


class _Killed(Exception):
    pass


def test_resume_continues_where_the_failed_run_stopped(toy, tmp_path, monkeypatch):
    import align
    from align.ppo import trainer

    fields = {"max_steps": 4, "save_steps": 2}
    straight = align.run(_recipe(toy, tmp_path / "straight", **fields))
    real, calls = trainer.make_batch, []

    def dies_at_step_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise _Killed
        return real(*args, **kwargs)

    out = tmp_path / "resumed"
    monkeypatch.setattr(trainer, "make_batch", dies_at_step_3)
    with pytest.raises(_Killed):
        align.run(_recipe(toy, out, **fields))
    monkeypatch.setattr(trainer, "make_batch", real)
    ckpt = tmp_path / ".resumed.ppo-checkpoints"
    assert (ckpt / "latest").read_text().strip() == "step-2" and not out.exists()
    resumed = align.run(_recipe(toy, out, **fields))
    assert resumed["resumed_from"] == 2 and resumed["global_step"] == 4
    assert [h["step"] for h in resumed["log_history"]] == [1, 2, 3, 4]
    for a, b in zip(straight["log_history"], resumed["log_history"], strict=True):
        assert b["reward_mean"] == pytest.approx(a["reward_mean"], abs=1e-5)
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
    assert not ckpt.exists()  # removed once training ended well
    with pytest.raises(RecipeError, match="another PPO recipe"):
        ckpt.mkdir()
        (ckpt / "step-1").mkdir()
        import torch

        torch.save({"recipe_key": "other"}, ckpt / "step-1" / "state.pt")
        (ckpt / "latest").write_text("step-1\n")
        align.run(_recipe(toy, tmp_path / "third", **fields, checkpoint_dir=str(ckpt)))


@pytest.mark.parametrize(("fields", "expect"), [
    ({"reward_model": "/nonexistent/rm"}, "reward_model /nonexistent/rm: no such folder"),
    ({"reward_model": None}, "PPO needs a reward"),
    ({"reward_funcs": ["nope"]}, "unknown reward 'nope'"),
    ({"kl_coef": -0.1}, "kl_coef"),
    ({"missing_eos_penalty": -1.0}, "missing_eos_penalty"),
    ({"trl": {"bf16": True}}, "no trl: options"),
])
def test_bad_recipes_fail_in_one_line(toy, tmp_path, fields, expect):
    with pytest.raises(RecipeError, match=expect) as e:
        _recipe(toy, tmp_path / "m", **fields).check_data()
    assert "\n" not in str(e.value)


def test_reward_model_of_another_tokenizer_is_refused(toy, tmp_path):
    """A reward model whose tokenizer maps tokens to other ids (here: two tokens swapped) is refused."""
    import shutil

    from transformers import AutoTokenizer

    rm = tmp_path / "rm"
    shutil.copytree(toy["reward_model"], rm)
    tok = json.loads((rm / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = "apple", "stone"
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (rm / "tokenizer.json").write_text(json.dumps(tok))
    assert AutoTokenizer.from_pretrained(rm).get_vocab()[a] == AutoTokenizer.from_pretrained(toy["policy"]).get_vocab()[b]
    with pytest.raises(RecipeError, match="tokenizer is not the policy's"):
        _recipe(toy, tmp_path / "m", reward_model=str(rm)).check_data()


# --- a reward function without a verdict (align/rewards/combine.py, align/ppo/rollout.py) -----------------

SILENT_REWARDS = '''
from align.rewards.base import RewardResult


def _sandboxed(prompts, completions, **columns):
    return [RewardResult(None, "sandbox_error", "cannot create a user namespace (needs root)") for _ in completions]


def sandboxed(prompts, completions, **columns):
    return [r.score for r in _sandboxed(prompts, completions, **columns)]


sandboxed.results = _sandboxed


def every_other(prompts, completions, **columns):
    return [None if i % 2 else float(len(c[-1]["content"]) % 3) for i, c in enumerate(completions)]
'''


@pytest.fixture
def silent_rewards(tmp_path, monkeypatch) -> Path:
    """A module ``silent_rewards`` on sys.path (and PYTHONPATH for a subprocess) with two user rewards."""
    folder = tmp_path / "rewards"
    folder.mkdir()
    (folder / "silent_rewards.py").write_text(SILENT_REWARDS)
    monkeypatch.syspath_prepend(str(folder))
    return folder


def test_a_reward_without_any_verdict_stops_ppo_in_one_line(toy, tmp_path, silent_rewards):
    """Every response of the first step gets no verdict (the code reward's sandbox without its rights):
    `rlaif align ppo` exits 2 with one line naming the reward and its reason, and writes nothing."""
    import os
    import subprocess
    import sys

    from conftest import BASE_ENV

    env = {**BASE_ENV, "PYTHONPATH": os.pathsep.join([str(silent_rewards), BASE_ENV.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "rlaif", "align", "ppo", "--prompts", toy["prompts"], "--model",
                          toy["policy"], "--reward", "silent_rewards:sandboxed", "--out", str(tmp_path / "m"),
                          "--max-steps", "2", "--quiet", "--set", "per_device_train_batch_size=4",
                          "--set", "max_new_tokens=4", "--set", "num_ppo_epochs=1"],
                         capture_output=True, text=True, env=env, timeout=600)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert ("reward 'sandboxed' gave no verdict for any of the 4 completions of a PPO step (4 x sandbox_error: "
            "cannot create a user namespace (needs root))") in lines[0]
    assert not (tmp_path / "m").exists()


def test_responses_without_a_verdict_are_left_out_of_the_update(toy, tmp_path, silent_rewards):
    """Half the responses have no verdict: they get no tokens in the losses or the whitening, the logged
    reward is the mean of the others, and the update still trains on the rest."""
    import torch

    from align.ppo.trainer import update

    ctx = _context(toy, tmp_path, reward_model=None, reward_funcs=["silent_rewards:every_other"],
                   per_device_train_batch_size=4, num_mini_batches=2, num_ppo_epochs=1)
    batch, stats = _batch(ctx, toy, 8)
    judged = torch.tensor([i % 2 == 0 for i in range(8)])
    assert stats["no_verdict_fraction"] == 0.5 and stats["rewards/every_other/scored"] == 0.5
    assert batch.mask[~judged].sum() == 0 and (batch.mask[judged].sum(1) > 0).all()
    assert batch.advantages[~judged].abs().sum() == 0 and batch.values[~judged].abs().sum() == 0
    assert stats["reward_mean"] == pytest.approx(stats["rewards/every_other/mean"], abs=1e-6)
    before = [p.detach().clone() for p in ctx.model.parameters()]
    out = update(ctx, batch, step=0)
    assert math.isfinite(out["loss"]) and out["ppo_updates"] == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, ctx.model.parameters(), strict=True))
