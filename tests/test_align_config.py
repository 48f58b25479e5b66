"""Recipes and data checks: bad input fails with ONE line on stderr, exit != 0, before any model loads.

The model in every CLI case is a folder that does not exist: had the command got as far as
loading a model, the error would name the model instead of the recipe or data problem.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from align import build_recipe, load_recipe
from bench.align import write_toy_preference_run
from plumbing.recipes import RecipeError, merge, parse_set

ROOT = Path(__file__).resolve().parents[1]
NO_MODEL = "/nonexistent/rlaif-test-model"


@pytest.fixture(scope="module")
def judge_run(tmp_path_factory) -> str:
    return str(write_toy_preference_run(tmp_path_factory.mktemp("cfg") / "judge", n=8))


@pytest.fixture(scope="module")
def revise_run(tmp_path_factory) -> str:
    from generator.records import REVISIONS
    from plumbing.runs import RunWriter

    out = tmp_path_factory.mktemp("cfg") / "revise"
    writer = RunWriter(out, "revise", {"toy": 1}, REVISIONS)
    writer.write([{"id": "a", "prompt": [{"role": "user", "content": "q"}],
                   "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                   "init_response": "x", "critiques": [], "revisions": [], "principle_ids": [], "model": "m",
                   "constitution_sha256": "c", "template_sha256": "t"}])
    writer.finish()
    return str(out)


def test_parse_set_and_merge():
    assert parse_set(["beta=0.2", "trl.bf16=true", "data.eval_ratio=0.1", "model=a/b"]) == {
        "beta": 0.2, "trl": {"bf16": True}, "data": {"eval_ratio": 0.1}, "model": "a/b"}
    assert merge({"data": "runs/x", "trl": {"a": 1}}, {"data": {"eval_ratio": 0.1}, "trl": {"b": 2}}) == {
        "data": {"path": "runs/x", "eval_ratio": 0.1}, "trl": {"a": 1, "b": 2}}
    assert merge({"data": {"path": "a", "eval_ratio": 0.2}}, {"data": "b"}) == {"data": {"path": "b", "eval_ratio": 0.2}}
    with pytest.raises(RecipeError, match="expected key=value"):
        parse_set(["beta"])


def test_shipped_recipes_validate():
    for method in ("sft", "reward", "dpo"):
        for name in (f"cpu-tiny-{method}.yaml", f"gpu-7b-{method}.yaml"):
            recipe = load_recipe(method, ROOT / "recipes" / name)
            assert recipe.method == method
    for name in ("zero2.yaml", "zero3.yaml", "ddp.yaml", "cpu-ddp.yaml"):
        assert (ROOT / "recipes" / "accelerate" / name).is_file()


def test_trl_args_pass_through_and_refuse_duplicates(tmp_path):
    raw = {"data": "x", "output_dir": str(tmp_path), "beta": 0.3, "trl": {"lr_scheduler_type": "cosine"}}
    args = build_recipe("dpo", raw).trl_args()
    assert args.beta == 0.3 and args.lr_scheduler_type == "cosine" and args.loss_type == ["sigmoid"]
    with pytest.raises(RecipeError, match=r"trl\.beta: set by the recipe field `beta`"):
        build_recipe("dpo", {**raw, "trl": {"beta": 0.5}})
    with pytest.raises(RecipeError, match=r"trl\.no_such_option: not a field of trl\.DPOConfig"):
        build_recipe("dpo", {**raw, "trl": {"no_such_option": 1}})
    with pytest.raises(RecipeError, match="soft_labels"):
        build_recipe("dpo", {**raw, "soft_labels": True, "loss_type": "ipo"})
    with pytest.raises(RecipeError, match="is a 'dpo' recipe"):
        build_recipe("reward", {**raw, "method": "dpo"})


def _bad(run_cli, *args: str) -> str:
    start = time.monotonic()
    res = run_cli("align", *args, timeout=300)
    elapsed = time.monotonic() - start
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and len(lines) == 1, res.stderr
    assert NO_MODEL not in lines[0], lines[0]  # failed before the model was even looked at
    assert elapsed < 120, elapsed  # no model load (a generous bound: the box is shared)
    return lines[0]


def test_cli_unknown_key(run_cli, judge_run, tmp_path):
    line = _bad(run_cli, "dpo", "--data", judge_run, "--model", NO_MODEL, "--out", str(tmp_path / "o"),
                "--set", "learnin_rate=1e-5")
    assert "learnin_rate" in line and "unknown key" in line


def test_cli_unknown_trl_key(run_cli, judge_run, tmp_path):
    line = _bad(run_cli, "reward", "--config", str(ROOT / "recipes/cpu-tiny-reward.yaml"), "--set",
                f"data={judge_run}", "--set", f"model={NO_MODEL}", "--set", "trl.warmup_ratio=0.1")
    assert "trl.warmup_ratio" in line and "RewardConfig" in line


def test_cli_missing_data_dir(run_cli, tmp_path):
    line = _bad(run_cli, "sft", "--data", str(tmp_path / "nope"), "--model", NO_MODEL, "--out", str(tmp_path / "o"))
    assert str(tmp_path / "nope") in line and "no such" in line


def test_cli_run_of_the_wrong_kind(run_cli, revise_run, judge_run, tmp_path):
    line = _bad(run_cli, "dpo", "--data", revise_run, "--model", NO_MODEL, "--out", str(tmp_path / "o"))
    assert "'revise' run" in line and "'judge' run" in line
    line = _bad(run_cli, "sft", "--data", judge_run, "--model", NO_MODEL, "--out", str(tmp_path / "o"))
    assert "'judge' run" in line and "'revise' run" in line


def test_cli_columns_missing(run_cli, tmp_path):
    f = tmp_path / "pairs.jsonl"
    f.write_text(json.dumps({"prompt": [{"role": "user", "content": "q"}],
                             "chosen": [{"role": "assistant", "content": "a"}]}) + "\n")
    line = _bad(run_cli, "dpo", "--data", str(f), "--model", NO_MODEL, "--out", str(tmp_path / "o"))
    assert "rejected" in line and "missing" in line
    f.write_text(json.dumps({"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant",
                             "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}) + "\n")
    line = _bad(run_cli, "reward", "--data", str(f), "--model", NO_MODEL, "--out", str(tmp_path / "o"),
                "--set", "soft_labels=true")
    assert "p_chosen" in line and "soft_labels" in line


def test_cli_missing_split_and_quick_form(run_cli, judge_run, tmp_path):
    line = _bad(run_cli, "dpo", "--data", judge_run, "--model", NO_MODEL, "--out", str(tmp_path / "o"),
                "--set", "data.eval_split=validation")
    assert "no split 'validation'" in line
    line = _bad(run_cli, "dpo", "--model", NO_MODEL)
    assert "--data" in line and "--config" in line


def test_cli_missing_model_is_one_line_too(run_cli, judge_run, tmp_path):
    res = run_cli("align", "dpo", "--data", judge_run, "--model", NO_MODEL, "--out", str(tmp_path / "o"),
                  "--max-steps", "1", timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert NO_MODEL in res.stderr.strip().splitlines()[-1]
