"""``rlaif data gsm8k|mbpp`` and ``rlaif align grpo``: importers, recipe checks through the CLI, and a
2-step GRPO run of the tiny random model (tests/conftest.py) on easy arithmetic prompts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BASE_ENV

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [(2, 3), (4, 5), (1, 1), (6, 2), (3, 3), (7, 1), (5, 5), (8, 1)]


def _cli(*args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**BASE_ENV, "RLAIF_NO_MODEL": "1"}
    return subprocess.run([sys.executable, "-m", "rlaif", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def _error_line(res: subprocess.CompletedProcess) -> str:
    """The single ``error:`` line of a refused command (TRL's import warnings about vLLM aside)."""
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def arithmetic(tmp_path_factory) -> Path:
    """A `rlaif data gsm8k` run of 8 "What is a + b?" problems, made through the CLI."""
    folder = tmp_path_factory.mktemp("grpo")
    rows = [{"question": f"What is {a} + {b}?", "answer": f"{a} + {b} = {a + b}\n#### {a + b}"} for a, b in PAIRS]
    (folder / "add.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = _cli("data", "gsm8k", "add.jsonl", "--out", "run", cwd=folder)
    assert res.returncode == 0, res.stderr[-2000:]
    return folder


def test_data_gsm8k_imports_the_shared_file_and_the_reward_scores_every_gold(shared_data, tmp_path):
    from align.rewards import get_reward
    from plumbing.runs import load, read_manifest

    res = _cli("data", "gsm8k", shared_data / "gsm8k-train-1000.jsonl", "--out", tmp_path / "run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    ds = load(tmp_path / "run")
    assert len(ds) == 1000 and ds.column_names == ["id", "prompt", "answer"]
    assert read_manifest(tmp_path / "run")["stage"] == "data-gsm8k"
    assert ds[0]["prompt"][0]["role"] == "user" and ds[0]["prompt"][0]["content"].startswith("Natalia sold clips")
    assert ds[0]["answer"].endswith("#### 72")  # the whole gold solution is kept
    scores = get_reward("gsm8k")(ds["prompt"], list(ds["answer"]), answer=ds["answer"])
    assert scores == [1.0] * 1000
    wrong = get_reward("gsm8k")(ds["prompt"][:3], ["#### 0.5"] * 3, answer=ds["answer"][:3])
    assert wrong == [0.0] * 3

    limited = _cli("data", "gsm8k", shared_data / "gsm8k-train-1000.jsonl", "--out", tmp_path / "ten",
                   "--limit", "10", cwd=tmp_path)
    assert limited.returncode == 0 and len(load(tmp_path / "ten")) == 10, limited.stderr[-2000:]


def test_data_arithmetic_is_seeded_distinct_and_scored_by_gsm8k(tmp_path):
    from align.rewards import get_reward
    from plumbing.runs import load, read_manifest
    from tasks.build import arithmetic_problems

    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        res = _cli("data", "arithmetic", "--out", name, "--count", "40", "--seed", seed, "--max-operand", "12",
                   cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-2000:]
    a, b, c = (load(tmp_path / n) for n in "abc")
    assert a["prompt"] == b["prompt"] and a["prompt"] != c["prompt"] and len(set(a["id"])) == 40
    manifest = read_manifest(tmp_path / "a")
    assert manifest["stage"] == "data-arithmetic" and manifest["spec"]["template"] == "tasks/final_answer.jinja"
    text = a["prompt"][0][0]["content"]
    assert text.startswith("What is ") and text.rstrip().endswith("#### 42")  # the instruction's example line
    assert get_reward("gsm8k")(a["prompt"], list(a["answer"]), answer=a["answer"]) == [1.0] * 40
    for problem in arithmetic_problems(200, seed=1, max_operand=12):  # the gold value is the arithmetic's
        left, value = problem["answer"].split(" = ")[0], int(problem["answer"].rsplit("#### ", 1)[1])
        x, op, y = left.split()
        assert value == {"+": int(x) + int(y), "-": int(x) - int(y), "\u00d7": int(x) * int(y)}[op] >= 0
    plain = _cli("data", "arithmetic", "--out", "plain", "--count", "5", "--plain", cwd=tmp_path)
    assert plain.returncode == 0 and load(tmp_path / "plain")["prompt"][0][0]["content"].endswith("?")
    line = _error_line(_cli("data", "arithmetic", "--out", "big", "--count", "1000", "--max-operand", "5",
                            cwd=tmp_path))
    assert "at most" in line and not (tmp_path / "big").exists()


def test_data_importers_refuse_a_bad_row_and_write_nothing(tmp_path):
    (tmp_path / "g.jsonl").write_text('{"question": "What is 1 + 1?", "answer": "#### 2"}\n'
                                      '{"question": "What is 2 + 2?", "answer": "four"}\n')
    line = _error_line(_cli("data", "gsm8k", "g.jsonl", "--out", "run", cwd=tmp_path))
    assert "g.jsonl row 2" in line and "####" in line
    (tmp_path / "c.jsonl").write_text('{"text": "Write f.", "test_list": ["assert f() == 1"]}\n'
                                      '{"text": "Write g.", "test_list": []}\n')
    line = _error_line(_cli("data", "mbpp", "c.jsonl", "--out", "code", cwd=tmp_path))
    assert "c.jsonl row 2" in line and "test_list" in line
    assert not (tmp_path / "run").exists() and not (tmp_path / "code").exists()


def test_data_mbpp_writes_prompts_and_tests(tmp_path):
    from plumbing.runs import load, read_manifest

    rows = [{"text": "Write a function f returning 1.", "test_list": ["assert f() == 1"],
             "test_setup_code": "import math"},
            {"prompt": "Write g(x) returning x + 1.", "tests": "assert g(1) == 2"}]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = _cli("data", "mbpp", "c.jsonl", "--out", "run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    ds = load(tmp_path / "run")
    assert read_manifest(tmp_path / "run")["stage"] == "data-code"
    assert ds["tests"] == [["import math", "assert f() == 1"], ["assert g(1) == 2"]]
    assert ds["prompt"][1] == [{"role": "user", "content": "Write g(x) returning x + 1."}]


@pytest.mark.parametrize(("extra", "expect"), [
    (("--reward", "nope"), "unknown reward 'nope'"),
    (("--reward", "gsm8k", "--set", "reward_weights=[1,2]"), "2 weight(s) for 1 reward(s)"),
    (("--reward", "gsm8k", "--reward", "length", "--set", "reward_weights=[1,-0.5]"), "each weight must be >= 0"),
    (("--reward", "gsm8k", "--set", "num_generations=-4"), "num_generations"),
    (("--reward", "gsm8k", "--set", "max_completion_length=-1"), "max_completion_length"),
    (("--reward", "gsm8k", "--set", "num_generations=3"), "multiple of num_generations"),
    (("--reward", "code"), "needs a 'tests' column"),
    (("--reward", "judge", "--set", "judge.engine=bogus"), "unknown engine 'bogus'"),
    (("--reward", "judge", "--set", "judge.base_urls=[ftp://x]"), "judge: --base-url 'ftp://x' is not"),
    (("--reward", "judge", "--set", "judge.constitution=nope.yaml"), "judge.constitution"),
    (("--reward", "judge", "--set", "judge.principles_per_pair=0"), "judge.principles_per_pair"),
    (("--reward", "gsm8k", "--set", "num_generations=4", "--set", "data.eval_ratio=0.25", "--set",
      "trl.per_device_eval_batch_size=6"), "trl.per_device_eval_batch_size 6 is not a multiple of the evaluation"),
])
def test_bad_grpo_recipes_fail_in_one_line_before_the_model(arithmetic, extra, expect):
    """RLAIF_NO_MODEL turns any model load into a traceback, so one error line means none happened."""
    line = _error_line(_cli("align", "grpo", "--data", "run", "--model", "smollm2-135m", "--out", "m", *extra,
                            cwd=arithmetic))
    assert expect in line
    assert not (arithmetic / "m").exists()


def test_grpo_trains_two_steps_and_logs_each_reward(arithmetic, tiny_model_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    out = tmp_path / "model"
    # A user reward (module:function) with a spread across each group, so the advantages are not all 0:
    # the random tiny model never writes the right number.
    (tmp_path / "spread.py").write_text(
        "def chars(prompts, completions, **columns):\n"
        "    return [min(1.0, len(c[-1]['content']) / 400) for c in completions]\n")
    env = {**BASE_ENV, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "rlaif", "align", "grpo", "--data", str(arithmetic / "run"),
                          "--model", tiny_model_dir, "--reward", "gsm8k", "--reward", "spread:chars", "--out", str(out),
                          "--max-steps", "2", "--quiet", "--set", "num_generations=4", "--set",
                          "max_completion_length=12", "--set", "reward_weights=[1.0,0.5]",
                          "--set", "learning_rate=1e-3"],
                         capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "grpo: 2 steps" in res.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "grpo" and metrics["global_step"] == 2
    steps = [h for h in metrics["log_history"] if "loss" in h]
    assert len(steps) == 2
    for h in steps:
        for name in ("gsm8k", "chars"):
            assert 0.0 <= h[f"rewards/{name}/mean"] <= 1.0 and 0.0 <= h[f"rewards/{name}/pass_rate"] <= 1.0
            assert h[f"rewards/{name}/scored"] == 1.0
            shares = [v for k, v in h.items() if k.startswith(f"rewards/{name}/status/")]
            assert shares and sum(shares) == pytest.approx(1.0)
        # gsm8k counts as 1.0, chars as 0.5 in the logged total (TRL's weighted sum)
        assert h["reward"] == pytest.approx(h["rewards/gsm8k/mean"] + 0.5 * h["rewards/chars/mean"], abs=1e-5)
        assert h["rewards/chars/status/scored"] == 1.0
    assert json.loads((out / "manifest.json").read_text())["stage"] == "align-grpo"
    assert (out / "training_curve.png").is_file() and "rlaif align grpo" in (out / "README.md").read_text()
    before, after = load_file(Path(tiny_model_dir) / "model.safetensors"), load_file(out / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the chars reward's spread moved the policy


def test_logged_reward_records_statuses_and_keeps_none():
    from align.grpo import Logged
    from align.rewards import get_reward

    metrics, extra = {}, {}
    reward = Logged("gsm8k", get_reward("gsm8k"))
    scores = reward([[{"role": "user", "content": "q"}]] * 4, ["#### 5", "4", "no idea", "#### 5"],
                    answer=["#### 5", "#### 5", "#### 5", "no gold"],
                    log_metric=lambda k, v: metrics.__setitem__(k, v),
                    log_extra=lambda k, v: extra.__setitem__(k, v))
    assert scores == [1.0, 0.0, 0.0, None]
    assert metrics["rewards/gsm8k/pass_rate"] == 0.25 and metrics["rewards/gsm8k/scored"] == 0.75
    assert {k.rsplit("/", 1)[1]: v for k, v in metrics.items() if "/status/" in k} == \
        {"correct": 0.25, "wrong": 0.25, "no_answer": 0.25, "bad_gold": 0.25}
    assert extra["gsm8k/status"] == ["correct", "wrong", "no_answer", "bad_gold"]


@pytest.mark.integration
def test_grpo_with_the_judge_reward_through_the_cli(arithmetic, tiny_model_dir, vllm_server, tmp_path):
    """The constitution judge (the embedded model on a real vLLM server) scores each completion against
    the other one of its group: p and 1 - p, so every group's rewards sum to 1 and the step's mean is 0.5."""
    out = tmp_path / "model"
    res = subprocess.run([sys.executable, "-m", "rlaif", "align", "grpo", "--data", str(arithmetic / "run"),
                          "--model", tiny_model_dir, "--reward", "judge", "--out", str(out), "--max-steps", "1",
                          "--quiet", "--set", "num_generations=2", "--set", "per_device_train_batch_size=4",
                          "--set", "max_completion_length=8", "--set", f'judge.base_urls=["{vllm_server}"]',
                          "--set", "judge.principles_per_pair=2"],
                         capture_output=True, text=True, cwd=ROOT, timeout=600, env=BASE_ENV)
    assert res.returncode == 0, res.stderr[-3000:]
    step = next(h for h in json.loads((out / "metrics.json").read_text())["log_history"] if "loss" in h)
    assert step["rewards/judge/scored"] == 1.0 and step["rewards/judge/status/judged"] == 1.0
    assert step["rewards/judge/mean"] == pytest.approx(0.5, abs=1e-6)
    assert 0.0 < step["rewards/judge/std"] < 0.5  # the judge told the two completions apart, softly


def test_grpo_on_two_processes(arithmetic, tiny_model_dir, tmp_path):
    """accelerate launch with 2 CPU processes (DDP over gloo): each generates its share of the groups,
    rank 0 writes the output and metrics.json says world_size 2."""
    out = tmp_path / "model"
    res = subprocess.run([sys.executable, "-m", "rlaif", "align", "grpo", "--data", str(arithmetic / "run"),
                          "--model", tiny_model_dir, "--reward", "gsm8k", "--out", str(out), "--max-steps", "1",
                          "--num-processes", "2", "--quiet", "--set", "num_generations=4", "--set",
                          "per_device_train_batch_size=4", "--set", "max_completion_length=8"],
                         capture_output=True, text=True, cwd=ROOT, timeout=600, env=BASE_ENV)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_step"] == 1
    step = next(h for h in metrics["log_history"] if "loss" in h)
    assert step["rewards/gsm8k/scored"] == 1.0 and 0.0 <= step["rewards/gsm8k/mean"] <= 1.0
    assert json.loads((out / "manifest.json").read_text())["stage"] == "align-grpo"


# --- whole groups on every process (align/grpo.py: check_whole_groups) ------------------------------------

@pytest.mark.parametrize(("world", "fields", "whole"), [
    (1, {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2}, True),
    (2, {"per_device_train_batch_size": 8}, True),
    (2, {"per_device_train_batch_size": 4}, False),  # 8 per generation, 4 on each process: half a group
    (4, {"per_device_train_batch_size": 2, "generation_batch_size": 32}, True),  # 4 steps x 2 = 8 each
    (4, {"per_device_train_batch_size": 2, "generation_batch_size": 16}, False),  # 2 steps x 2 = 4 each
    (2, {"per_device_train_batch_size": 2, "steps_per_generation": 4}, True),
    (2, {"per_device_train_batch_size": 2, "steps_per_generation": 2}, False),
    (4, {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2, "steps_per_generation": 4}, True),
    (6, {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 4, "steps_per_generation": 1}, False),
    (3, {"per_device_train_batch_size": 8}, True),
    (8, {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 8}, True),
])
def test_every_process_holds_whole_groups(world, fields, whole, monkeypatch, tmp_path):
    """8 completions per prompt; TRL 1.16 accepts every row (each generation batch of all processes holds
    whole groups), and check_whole_groups refuses those where a process would hold part of a group."""
    import transformers
    import trl

    from align.config import RecipeError
    from align.grpo import check_whole_groups

    monkeypatch.setattr(transformers.TrainingArguments, "world_size", property(lambda self: world))
    args = trl.GRPOConfig(output_dir=str(tmp_path), num_generations=8, use_cpu=True, bf16=False, report_to="none",
                          **fields)
    assert args.generation_batch_size % 8 == 0  # TRL's own check passed
    if whole:
        check_whole_groups(args, evaluates=False)
    else:
        with pytest.raises(RecipeError, match="not a multiple of num_generations") as e:
            check_whole_groups(args, evaluates=False)
        assert "\n" not in str(e.value)
    local = args.per_device_train_batch_size * args.steps_per_generation
    assert (local % 8 == 0) == whole  # the table's arithmetic: completions each process scores at once


@pytest.mark.parametrize(("eval_batch", "eval_group", "whole"), [(8, None, True), (6, None, False), (6, 3, True)])
def test_the_final_evaluation_holds_whole_groups(eval_batch, eval_group, whole, tmp_path):
    import trl

    from align.config import RecipeError
    from align.grpo import check_whole_groups

    args = trl.GRPOConfig(output_dir=str(tmp_path), num_generations=4, num_generations_eval=eval_group,
                          per_device_train_batch_size=4, per_device_eval_batch_size=eval_batch, use_cpu=True,
                          bf16=False, report_to="none")
    check_whole_groups(args, evaluates=False)  # no held-out prompts, no evaluation
    if whole:
        check_whole_groups(args, evaluates=True)
    else:
        with pytest.raises(RecipeError, match="per_device_eval_batch_size 6"):
            check_whole_groups(args, evaluates=True)


# --- a reward without a verdict (align/rewards/combine.py: require_a_verdict) ----------------------------

def test_a_reward_without_any_verdict_stops_grpo(monkeypatch):
    """No verdict for any completion of the call stops the run naming the reward and its reasons, on every
    process alike (the counts are summed over processes first); a partial None goes to TRL as None."""
    from align.grpo import Logged
    from align.rewards import RewardResult, get_reward
    from align.rewards.combine import NoVerdictError

    prompts = [[{"role": "user", "content": "q"}]] * 4
    partial = Logged("gsm8k", get_reward("gsm8k"))(prompts, ["#### 5", "x", "#### 4", "#### 5"],
                                                    answer=["#### 5", "no gold", "no gold", "#### 5"])
    assert partial == [1.0, None, None, 1.0]

    def sandboxed(prompts, completions, **columns):
        return [None] * len(completions)

    sandboxed.results = lambda p, c, **k: [RewardResult(None, "sandbox_error", "cannot unshare (needs root)")] * len(c)
    with pytest.raises(NoVerdictError) as e:
        Logged("code", sandboxed)(prompts, ["a", "b", "c", "d"])
    assert str(e.value).startswith("reward 'code' gave no verdict for any of the 4 completions of a GRPO step "
                                   "(4 x sandbox_error: cannot unshare (needs root))")
    import align.grpo

    # two processes with the same call: the counts are summed before the rule is applied
    monkeypatch.setattr(align.grpo, "_everyone", lambda local: (2 * local[0], 2 * local[1], local[2] + local[2]))
    with pytest.raises(NoVerdictError, match="any of the 8 completions .* \\(8 x no_verdict\\)"):
        Logged("mine", lambda p, c, **k: [None] * len(c))(prompts, ["a", "b", "c", "d"])


def test_grpo_run_without_any_verdict_exits_2_in_one_line(arithmetic, tiny_model_dir, tmp_path):
    """Through the CLI: gsm8k scores, the second reward (the code reward's sandbox without its rights,
    mimicked) never does; the run stops at its first step with one line and no output."""
    (tmp_path / "silent.py").write_text(
        "from align.rewards.base import RewardResult\n\n\n"
        "def _sandboxed(prompts, completions, **columns):\n"
        "    return [RewardResult(None, 'sandbox_error', 'cannot unshare (needs root)') for _ in completions]\n\n\n"
        "def sandboxed(prompts, completions, **columns):\n"
        "    return [r.score for r in _sandboxed(prompts, completions, **columns)]\n\n\n"
        "sandboxed.results = _sandboxed\n")
    env = {**BASE_ENV, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "rlaif", "align", "grpo", "--data", str(arithmetic / "run"),
                          "--model", tiny_model_dir, "--reward", "gsm8k", "--reward", "silent:sandboxed",
                          "--out", str(tmp_path / "m"), "--max-steps", "2", "--quiet", "--set", "num_generations=4",
                          "--set", "max_completion_length=8"],
                         capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    line = _error_line(res)
    assert ("reward 'sandboxed' gave no verdict for any of the 8 completions of a GRPO step (8 x sandbox_error: "
            "cannot unshare (needs root))") in line
    assert not (tmp_path / "m").exists()
