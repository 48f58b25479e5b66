"""``rlaif run`` fingerprints (pipeline/loop.py ``fingerprints``, ``reads_from``; plumbing/hashing.py) around the
cases of tests/test_pipeline_review.py: what must still re-run once runtime knobs are left out, a stage folder
read outside ``UPSTREAM`` when its stage resumes, symlink loops, shard-named FIFOs and user code in a package.
Each plan is made on a finished state, without models."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys

import pytest
from test_pipeline import ROOT, _finished, _replan, _run_dir, recipe

from pipeline.fingerprints import INPUT_KEYS, TRL_RUNTIME_KEYS, fingerprints
from pipeline.root import PipelineError
from pipeline.stages import build_all

STAGES = ["generate", "revise", "sft", "judge", "dpo", "eval"]
# (the recipe's change, the stages listed, the stages that run): what a stage computes, so it counts
COUNTS = {
    "an engine that servers make openai": ({"engine": {"base_urls": ["http://a:8000/v1"]}}, STAGES,
                                           {"generate", "revise", "sft", "judge", "dpo", "eval"}),
    "the training batch": ({"sft": {"per_device_train_batch_size": 8}}, STAGES, {"sft", "dpo", "eval"}),
    "gradient accumulation": ({"dpo": {"gradient_accumulation_steps": 2}}, STAGES, {"dpo", "eval"}),
    "the judge's item limit": ({"judge": {"limit": 4}}, ["generate", "judge", "dpo"], {"judge", "dpo"}),
    "TRL's checkpoint steps": ({"dpo": {"trl": {"save_steps": 5}}}, STAGES, {"dpo", "eval"}),
}


@pytest.mark.parametrize("case", list(COUNTS))
def test_what_a_stage_computes_still_counts(tmp_path, case):
    """The engine kind counts (ARCHITECTURE, Runs) though the URLs that choose it do not; a training batch is the
    optimizer's; a reused stage is not topped up to a new limit; a checkpoint may be the model kept."""
    change, stages, reran = COUNTS[case]
    done = _finished(recipe(tmp_path, stages=stages))
    plan = _replan(recipe(tmp_path, stages=stages, **change), done)
    assert {s for s, a in plan.items() if a == "run"} == reran, plan


def test_trl_logging_and_loader_knobs_reuse_the_stage(tmp_path):
    done = _finished(recipe(tmp_path, stages=STAGES))
    knobs = {"logging_steps": 5, "report_to": "tensorboard", "dataloader_num_workers": 2, "run_name": "x"}
    assert set(_replan(recipe(tmp_path, stages=STAGES, sft={"trl": knobs}), done).values()) == {"reuse"}


def test_every_trl_key_named_is_a_field_of_trl():
    """A misspelt key would never match: each runtime or file key listed for `trl:` is a field of a TRL config."""
    import trl

    fields = {f.name for name in ("SFTConfig", "DPOConfig", "RewardConfig", "GRPOConfig")
              for f in dataclasses.fields(getattr(trl, name))}
    trl_files = {"chat_template_path", "deepspeed", "fsdp_config", "accelerator_config"}
    assert trl_files <= INPUT_KEYS and (TRL_RUNTIME_KEYS | trl_files) - fields == set()


def _self_rewarding(tmp_path):
    return recipe(tmp_path, stages=["generate", "revise", "sft", "judge", "dpo"],
                  judge={"model": str(tmp_path / "root" / "sft")})


def test_a_stage_folder_read_outside_upstream_runs_when_its_stage_resumes(tmp_path):
    """SFT killed mid-training resumes with its fingerprint unchanged; the judge that is its model runs after it
    (it labelled with the old model), and so does DPO."""
    done = _finished(_self_rewarding(tmp_path))
    del done["stages"]["sft"]["finished"]
    assert _replan(_self_rewarding(tmp_path), done) == {"generate": "reuse", "revise": "reuse", "sft": "resume",
                                                        "judge": "run", "dpo": "run"}


def test_a_stage_folder_spelt_another_way_is_that_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = recipe(tmp_path, stages=["generate", "revise", "sft", "judge", "dpo"], judge={"model": "./root/../root/sft"})
    done = _finished(r)
    del done["stages"]["sft"]["finished"]
    assert _replan(r, done)["judge"] == "run"


def test_the_folder_of_a_later_stage_is_refused(tmp_path):
    """The judge would label with whatever DPO left in the root last time."""
    r = recipe(tmp_path, stages=["generate", "judge", "dpo"], judge={"model": str(tmp_path / "root" / "dpo")})
    with pytest.raises(PipelineError, match=r"^stage judge reads .*/root/dpo, the folder of stage dpo, which runs "
                                            r"after it; give a copy outside the root"):
        fingerprints(r, build_all(r))


def test_a_symlink_loop_in_a_template_folder_is_walked_once(tmp_path):
    """A link back to the folder itself (or a parent) is not entered: the hash is the folder's without it."""
    from plumbing.hashing import folder_sha256

    folder = tmp_path / "templates"
    (folder / "judge").mkdir(parents=True)
    shutil.copy(ROOT / "prompts" / "judge" / "pairwise.jinja", folder / "judge" / "pairwise.jinja")
    plain = folder_sha256(folder)
    (folder / "judge" / "up").symlink_to(folder, target_is_directory=True)
    (folder / "self").symlink_to(".", target_is_directory=True)
    assert folder_sha256(folder) == plain

    def make():
        return recipe(tmp_path, stages=["generate", "judge"], judge={"templates": str(folder)})

    done = _finished(make())
    (folder / "judge" / "pairwise.jinja").write_text("Answer with one letter.\n")
    assert _replan(make(), done) == {"generate": "reuse", "judge": "run"}


def test_a_fifo_named_like_a_shard_is_no_shard(tmp_path):
    """A FIFO blocks whoever opens it: the plan (which hashes the shards) and every reader of the run."""
    from plumbing.runs import shard_files

    run = tmp_path / "problems"
    _run_dir(run, ["What is 2 + 2?"])
    shards = shard_files(run)
    os.mkfifo(run / "data" / "train-99999-000000000.parquet")
    (run / "data" / "train-99998-000000000.parquet").mkdir()
    assert shard_files(run) == shards and len(shards) == 1

    def make():
        return recipe(tmp_path, stages=["grpo"], grpo={"data": str(run), "reward_funcs": ["gsm8k"]})

    done = _finished(make())
    assert _replan(make(), done) == {"grpo": "reuse"}


def test_a_reward_function_in_a_package_is_read_by_its_module(tmp_path, monkeypatch):
    """`package.module:function`: the module's own file counts (the package's __init__ is another file)."""
    package = tmp_path / "review_rewards_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    module = package / "scores.py"
    module.write_text("def score(prompts, completions, **kw):\n    return [1.0 for _ in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("review_rewards_pkg", "review_rewards_pkg.scores"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    data = tmp_path / "problems.jsonl"
    data.write_text('{"prompt": "What is 2 + 2?", "answer": "4"}\n')

    def make():
        return recipe(tmp_path, stages=["grpo"], grpo={"data": str(data), "reward_funcs": ["review_rewards_pkg.scores:score"]})

    done = _finished(make())
    assert set(_replan(make(), done).values()) == {"reuse"}
    module.write_text("def score(prompts, completions, **kw):\n    return [0.0 for _ in completions]\n")
    assert _replan(make(), done) == {"grpo": "run"}
