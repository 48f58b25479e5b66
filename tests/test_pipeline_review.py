"""``rlaif run`` fingerprints (pipeline/loop.py ``fingerprints``, plumbing/hashing.py) held against inputs that
change what a stage computes without changing its fingerprint, and runtime knobs that change the fingerprint
without changing what the stage computes. Each case is planned twice on a finished state, without models:
nothing edited -> every stage reused; the input edited (or the knob turned) -> the expected plan."""

from __future__ import annotations

import shutil
import sys
import time
import types
from pathlib import Path

import pytest
from test_pipeline import ROOT, _finished, _model_folder, _replan, recipe


def _align_output(path: Path, method: str, weights: bytes) -> Path:
    """A model folder as ``rlaif align <method>`` leaves it: config, weights, tokenizer and its manifest."""
    from align import build_recipe
    from align.output import write_manifest

    _model_folder(path)
    (path / "model.safetensors").write_bytes(weights)
    write_manifest(path, build_recipe(method, {"data": str(path.parent / "pairs.jsonl"), "output_dir": str(path),
                                               "learning_rate": 1e-5}))
    return path


def test_an_align_output_used_as_a_model_is_read_by_its_weights(tmp_path):
    """A reward model (or start model) written by `rlaif align` has a manifest.json, so input_sha256 read it as a
    run directory: stage, status and no shards. Every reward model is then the same input, and one trained again
    in place is unchanged."""
    first = _align_output(tmp_path / "rm-a", "reward", b"\x01" * 4096)
    other = _align_output(tmp_path / "rm-b", "reward", b"\x02" * 4096)

    def make(rm: Path):
        return recipe(tmp_path, stages=["generate", "judge", "reward", "ppo"], ppo={"reward_model": str(rm)})

    done = _finished(make(first))
    assert set(_replan(make(first), done).values()) == {"reuse"}
    assert _replan(make(other), done)["ppo"] == "run"  # another reward model
    (first / "model.safetensors").write_bytes(b"\x03" * 4096)  # trained again in place
    assert _replan(make(first), done)["ppo"] == "run"


def test_a_chat_template_file_under_trl_is_read_by_content(tmp_path):
    """`trl: {chat_template_path: FILE}` is the template SFTTrainer renders every row with (TRL reads the file)."""
    template = tmp_path / "chat.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")

    def make():
        return recipe(tmp_path, stages=["revise", "sft"], sft={"trl": {"chat_template_path": str(template)}})

    done = _finished(make())
    assert set(_replan(make(), done).values()) == {"reuse"}
    template.write_text("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}")
    assert _replan(make(), done) == {"revise": "reuse", "sft": "run"}


# Runtime knobs: (the recipe before, the recipe after). The run directories leave them out of the spec hash
# (generator/generate.py base_spec, judge/build.py judge_spec); the loop's fingerprints should too.
KNOBS = {
    "engine batch_size": ({}, {"engine": {"batch_size": 4}}),
    "engine server URL": ({"engine": {"engine": "openai", "base_urls": ["http://a:8000/v1"]}},
                          {"engine": {"engine": "openai", "base_urls": ["http://b:9000/v1"]}}),
    "judge batch_size": ({}, {"judge": {"batch_size": 8}}),
    "judge server URL": ({"judge": {"engine": "openai", "base_urls": ["http://a:8000/v1"]}},
                         {"judge": {"engine": "openai", "base_urls": ["http://b:9000/v1"]}}),
    "sft progress bars": ({}, {"sft": {"quiet": False}}),
}


@pytest.mark.parametrize("knob", list(KNOBS))
def test_a_runtime_knob_reuses_every_stage(tmp_path, knob):
    before, after = KNOBS[knob]
    stages = ["generate", "revise", "sft", "judge", "dpo", "eval"]
    done = _finished(recipe(tmp_path, stages=stages, **before))
    assert set(_replan(recipe(tmp_path, stages=stages, **after), done).values()) == {"reuse"}


def test_a_stage_folder_read_outside_upstream_follows_that_stage(tmp_path):
    """A judge that is the loop's SFT model (self-rewarding, arXiv 2401.10020): when SFT trains again, the judge
    labels with another model, yet ``<root>/sft`` is only a name in the judge's fingerprint."""
    import yaml

    const = tmp_path / "constitution.yaml"
    shutil.copy(ROOT / "constitution" / "default.yaml", const)

    def make():
        return recipe(tmp_path, constitution=str(const), stages=["generate", "revise", "sft", "judge", "dpo"],
                      judge={"model": str(tmp_path / "root" / "sft")})

    done = _finished(make())
    data = yaml.safe_load(const.read_text())
    data["principles"][0]["critique"] += " Be brief."  # revise and so SFT run again; the judge reads no critique
    const.write_text(yaml.safe_dump(data))
    assert _replan(make(), done) == {"generate": "reuse", "revise": "run", "sft": "run", "judge": "run", "dpo": "run"}


def test_a_template_folder_with_a_symlinked_subfolder_is_read_by_content(tmp_path):
    """Jinja's loader reads <templates>/judge/pairwise.jinja through a symlinked judge/ folder; folder_sha256's
    rglob does not descend into it."""
    from prompts import template_source

    shared = tmp_path / "shared-judge"
    shared.mkdir()
    shutil.copy(ROOT / "prompts" / "judge" / "pairwise.jinja", shared / "pairwise.jinja")
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "judge").symlink_to(shared, target_is_directory=True)

    def make():
        return recipe(tmp_path, stages=["generate", "judge"], judge={"templates": str(folder)})

    done = _finished(make())
    assert set(_replan(make(), done).values()) == {"reuse"}
    (shared / "pairwise.jinja").write_text((shared / "pairwise.jinja").read_text() + "\nAnswer with one letter.\n")
    assert template_source("judge/pairwise.jinja", folder).endswith("Answer with one letter.\n")  # what is judged
    assert _replan(make(), done) == {"generate": "reuse", "judge": "run"}


def test_a_user_reward_functions_source_is_read_by_content(tmp_path, monkeypatch):
    """`reward_funcs: [module:function]`: the function scores every completion GRPO trains on."""
    module = tmp_path / "my_reward_review.py"
    module.write_text("def score(prompts, completions, **kw):\n    return [1.0 for _ in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_reward_review", raising=False)
    data = tmp_path / "problems.jsonl"
    data.write_text('{"prompt": "What is 2 + 2?", "answer": "4"}\n')

    def make():
        return recipe(tmp_path, stages=["grpo"], grpo={"data": str(data), "reward_funcs": ["my_reward_review:score"]})

    done = _finished(make())
    assert set(_replan(make(), done).values()) == {"reuse"}
    module.write_text("def score(prompts, completions, **kw):\n    return [-1.0 for _ in completions]\n")
    assert _replan(make(), done) == {"grpo": "run"}


def test_a_big_file_written_again_while_it_is_hashed_is_not_remembered(tmp_path, monkeypatch):
    """On a filesystem whose timestamps tick by the second (ext3, HFS+; FAT by 2 s) a write in the same tick as
    the stamp leaves the stamp as it was. The stamp is taken before the read, so the file must have settled by
    then; settling measured after a long read (~14 s for 15 GB) keeps the sha256 of bytes the file no longer
    holds, and every later plan reads that."""
    from plumbing import hashing

    class Stat:  # what such a filesystem reports: whole seconds
        def __init__(self, st):
            self.st, self.st_mtime_ns, self.st_ctime_ns = st, st.st_mtime_ns // 10**9 * 10**9, \
                st.st_ctime_ns // 10**9 * 10**9

        def __getattr__(self, name):
            return getattr(self.st, name)

    class CoarsePath(type(Path())):
        def stat(self, **kw):
            return Stat(super().stat(**kw))

    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hashing, "BIG_FILE", 16)
    monkeypatch.setattr(hashing, "Path", CoarsePath)
    clock = [0]
    monkeypatch.setattr(hashing, "time", types.SimpleNamespace(time_ns=lambda: clock[0]))
    weights, read = tmp_path / "model.safetensors", hashing.file_sha256
    while time.time() % 1 > 0.5:  # the write, the stamp and the second write within one second
        time.sleep(0.05)
    weights.write_bytes(b"a" * 64)
    clock[0] = time.time_ns()

    def slow_read(path):
        sha = read(path)
        with open(weights, "r+b") as f:  # written again in the same second, same size
            f.write(b"b" * 64)
        clock[0] += 14 * 10**9  # the read of a big file took 14 s
        return sha

    monkeypatch.setattr(hashing, "file_sha256", slow_read)
    hashing.content_sha256(weights)
    monkeypatch.setattr(hashing, "file_sha256", read)
    assert hashing.content_sha256(weights) == read(weights)  # the bytes it holds now
