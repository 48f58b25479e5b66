"""``rlaif run``: the plan (what runs, what is reused and why), fingerprints that follow what each stage
reads, the report's numbers traced to the stages' metrics.json, and one integration loop on the
embedded model that is SIGKILLed in its judge stage and resumed."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.fingerprints import fingerprints
from pipeline.loop import Step, plan
from pipeline.recipe import PipelineRecipe
from pipeline.root import PipelineError
from pipeline.stages import build_all

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "constitution" / "default.yaml"


def recipe(tmp_path: Path, **over) -> PipelineRecipe:
    raw = {"name": "t", "root": str(tmp_path / "root"), "stages": ["generate", "revise", "sft", "judge", "dpo", "eval"],
           **over}
    return PipelineRecipe.model_validate(raw)


def _actions(steps: list[Step]) -> dict[str, str]:
    return {s.stage: s.action for s in steps}


def test_fresh_then_reused_then_resumed(tmp_path):
    r = recipe(tmp_path)
    fps = fingerprints(r, build_all(r))
    steps = plan(r, fps, {"stages": {}})
    assert _actions(steps) == dict.fromkeys(r.stages, "run")
    assert [s.why for s in steps][:2] == ["not run yet", "not run yet"] and steps[3].why == "generate runs before it"
    done = {"stages": {s: {"fingerprint": fps[s], "finished": "t0"} for s in r.stages}}
    assert set(_actions(plan(r, fps, done)).values()) == {"reuse"}
    killed = json.loads(json.dumps(done))
    del killed["stages"]["judge"]["finished"]  # SIGKILLed in the judge stage
    assert _actions(plan(r, fps, killed)) == {"generate": "reuse", "revise": "reuse", "sft": "reuse",
                                              "judge": "resume", "dpo": "run", "eval": "run"}


def test_a_moved_root_keeps_its_fingerprints(tmp_path):
    """Stage folders count by their stage's fingerprint, not where the root lies (a copied root reuses)."""
    here, there = recipe(tmp_path), recipe(tmp_path, root=str(tmp_path / "elsewhere" / "copy"))
    assert "<root>" not in json.dumps(build_all(here)) and str(tmp_path / "root" / "sft") in json.dumps(build_all(here))
    assert fingerprints(here, build_all(here)) == fingerprints(there, build_all(there))


def test_from_and_until(tmp_path):
    r = recipe(tmp_path)
    fps = fingerprints(r, build_all(r))
    done = {"stages": {s: {"fingerprint": fps[s], "finished": "t0"} for s in r.stages}}
    assert _actions(plan(r, fps, done, start="dpo")) == {**dict.fromkeys(r.stages, "reuse"), "dpo": "run",
                                                          "eval": "run"}
    assert _actions(plan(r, fps, {"stages": {}}, until="judge")) == {**dict.fromkeys(r.stages, "run"),
                                                                      "dpo": "skip", "eval": "skip"}
    with pytest.raises(PipelineError, match="--from dpo: generate before it has not finished"):
        plan(r, fps, {"stages": {}}, start="dpo")
    with pytest.raises(PipelineError, match="--until ppo: not a stage of this recipe"):
        plan(r, fps, done, until="ppo")


def _finished(r: PipelineRecipe) -> dict:
    """pipeline.json after every stage of ``r`` finished."""
    fps = fingerprints(r, build_all(r))
    return {"stages": {s: {"fingerprint": fps[s], "finished": "t0"} for s in r.stages}}


def _replan(r: PipelineRecipe, state: dict) -> dict[str, str]:
    return _actions(plan(r, fingerprints(r, build_all(r)), state))


def _edit_principle(path: Path, field: str) -> None:
    data = yaml.safe_load(path.read_text())
    data["principles"][0][field] = data["principles"][0][field] + " Be brief."
    path.write_text(yaml.safe_dump(data))


def test_a_principle_edit_reaches_only_the_stages_that_read_it(tmp_path):
    """Each edit is made in place, so the recipe names the same file before and after: only its content moves
    the plan."""
    const = tmp_path / "constitution.yaml"
    shutil.copy(DEFAULT, const)
    r = recipe(tmp_path, constitution=str(const))
    done = _finished(r)
    assert set(_replan(r, done).values()) == {"reuse"}
    _edit_principle(const, "compare")  # the judge (and eval's judge) read the comparison questions
    assert _replan(r, done) == {"generate": "reuse", "revise": "reuse", "sft": "reuse", "judge": "run", "dpo": "run",
                                "eval": "run"}
    shutil.copy(DEFAULT, const)  # the old text again: nothing to do
    assert set(_replan(r, done).values()) == {"reuse"}
    _edit_principle(const, "critique")  # revise reads the critiques; the judge does not
    assert _replan(r, done) == {"generate": "reuse", "revise": "run", "sft": "run", "judge": "reuse", "dpo": "run",
                                "eval": "run"}
    moved = tmp_path / "elsewhere.yaml"
    shutil.copy(DEFAULT, moved)  # the same text under another name: the content, not the path
    assert set(_replan(recipe(tmp_path, constitution=str(moved)), done).values()) == {"reuse"}


def _reads_by_content(tmp_path: Path, make, first: Path, edit, reran: set[str], noise=None) -> None:
    """``make(path)`` is a recipe one of whose stages reads ``path``, finished once. Nothing changed: every
    stage is reused; ``noise(path)`` (what no stage reads) changes nothing either; ``edit(path)``: the stages
    in ``reran`` run and the rest are reused; the unedited input copied to another place: reused."""
    r = make(first)
    done = _finished(r)
    assert set(_replan(r, done).values()) == {"reuse"}
    moved = tmp_path / "moved" / first.name
    moved.parent.mkdir()
    (shutil.copytree if first.is_dir() else shutil.copy)(first, moved)
    if noise is not None:
        noise(first)
        assert set(_replan(r, done).values()) == {"reuse"}
    edit(first)
    after = _replan(r, done)
    assert {s for s, a in after.items() if a == "run"} == reran and \
        {a for s, a in after.items() if s not in reran} <= {"reuse"}, after
    assert set(_replan(make(moved), done).values()) == {"reuse"}


def _append_prompt(path: Path) -> None:
    path.write_text(path.read_text() + '{"prompt": "Name a prime number."}\n')


# A stage's own file: (the stages listed, the stage and the key naming the file, what an edit re-runs)
OWN_FILES = {
    "generate-prompts": (["generate", "revise"], "generate", "prompts", {"generate"}),
    "revise-prompts": (["generate", "revise"], "revise", "prompts", {"revise"}),
    "eval-prompts": (["revise", "sft", "eval"], "eval", "prompts", {"eval"}),
    "sft-data": (["revise", "sft"], "sft", "data", {"sft"}),
    "ppo-data": (["generate", "judge", "reward", "ppo"], "ppo", "data", {"ppo"}),
    "grpo-data": (["grpo"], "grpo", "data", {"grpo"}),
    "judge-constitution": (["generate", "judge", "dpo"], "judge", "constitution", {"judge", "dpo"}),
}


@pytest.mark.parametrize("case", list(OWN_FILES))
def test_a_stages_own_file_is_read_by_content(tmp_path, case):
    stages, stage, key, reran = OWN_FILES[case]
    if key == "constitution":
        path, edit = tmp_path / "own.yaml", lambda p: _edit_principle(p, "compare")
        shutil.copy(DEFAULT, path)
    else:
        path, edit = tmp_path / "own.jsonl", _append_prompt
        path.write_text('{"prompt": "What is 2 + 2?", "answer": "4"}\n')
    extra = {"reward_funcs": ["gsm8k"]} if stage == "grpo" else {}
    _reads_by_content(tmp_path, lambda p: recipe(tmp_path, stages=stages, **{stage: {key: str(p), **extra}}),
                      path, edit, reran)


# A template folder: (the stages listed, the stage, the template it shadows, what an edit re-runs)
TEMPLATE_FOLDERS = {"judge": (["generate", "judge"], "judge/pairwise.jinja", {"judge"}),
                    "revise": (["generate", "revise"], "critique.jinja", {"revise"})}


@pytest.mark.parametrize("stage", list(TEMPLATE_FOLDERS))
def test_a_template_folder_is_read_by_content(tmp_path, stage):
    stages, name, reran = TEMPLATE_FOLDERS[stage]
    folder = tmp_path / "templates"
    (folder / name).parent.mkdir(parents=True)
    shutil.copy(ROOT / "prompts" / name, folder / name)

    def edit(p: Path) -> None:
        (p / name).write_text((p / name).read_text() + "\nAnswer with one letter.\n")

    def noise(p: Path) -> None:  # an editor's swap file
        (p / name).with_name(f".{Path(name).name}.swp").write_text("x")

    _reads_by_content(tmp_path, lambda p: recipe(tmp_path, stages=stages, **{stage: {"templates": str(p)}}),
                      folder, edit, reran, noise)


def _run_dir(path: Path, prompts: list[str], overwrite: bool = False) -> None:
    """A finished run directory of ``prompts`` (plumbing/runs.py), as `rlaif data gsm8k` writes one."""
    from datasets import Features, Value

    from plumbing.hashing import item_id
    from plumbing.runs import RunWriter

    features = Features({"id": Value("string"), "prompt": Value("string"), "answer": Value("string")})
    writer = RunWriter(path, "data", {"source": "test"}, features, overwrite=overwrite)
    writer.write([{"id": item_id(i), "prompt": p, "answer": "4"} for i, p in enumerate(prompts)])
    writer.finish()


def test_a_run_directory_read_as_data_is_read_by_content(tmp_path):
    """GRPO's problems from a run directory: its rows count, not its path, its start times or its logs."""
    run = tmp_path / "problems"
    _run_dir(run, ["What is 2 + 2?", "What is 3 + 3?"])

    def noise(p: Path) -> None:  # started again with nothing left to do: a new start time, an updated manifest
        _run_dir(p, [])
        assert len(json.loads((p / "manifest.json").read_text())["runtimes"]) == 2

    def edit(p: Path) -> None:  # the same spec and the same number of rows, one row's text changed
        _run_dir(p, ["What is 2 + 2?", "What is 5 + 5?"], overwrite=True)

    _reads_by_content(tmp_path, lambda p: recipe(tmp_path, stages=["grpo"], grpo={"data": str(p),
                                                                                  "reward_funcs": ["gsm8k"]}),
                      run, edit, {"grpo"}, noise)


# A model folder: (the stages listed, the recipe with the folder at MODEL, what an edit re-runs)
MODEL_FOLDERS = {
    "start model": (["generate", "revise", "sft", "judge", "dpo", "eval"], {"model": "MODEL"},
                    {"generate", "revise", "sft", "judge", "dpo", "eval"}),
    "reward model": (["generate", "judge", "reward", "ppo"], {"ppo": {"reward_model": "MODEL"}}, {"ppo"}),
    "judge model": (["generate", "judge", "reward"], {"judge": {"model": "MODEL"}}, {"judge", "reward"}),
}


def _model_folder(path: Path) -> Path:
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    (path / "model.safetensors").write_bytes(b"\x00" * 4096)
    (path / "tokenizer.json").write_text("{}")
    return path


@pytest.mark.parametrize("role", list(MODEL_FOLDERS))
def test_a_model_folder_is_read_by_content(tmp_path, role):
    stages, over, reran = MODEL_FOLDERS[role]

    def edit(p: Path) -> None:  # trained again in place: same names, same sizes, other weights
        (p / "model.safetensors").write_bytes(b"\x01" * 4096)

    def noise(p: Path) -> None:  # what from_pretrained does not read: a checkpoint, the Hub's download cache
        (p / "checkpoint-1").mkdir()
        (p / "checkpoint-1" / "optimizer.pt").write_bytes(b"x")
        (p / ".cache").mkdir()
        (p / ".cache" / "model.safetensors.metadata").write_text("etag")

    def make(p: Path) -> PipelineRecipe:
        return recipe(tmp_path, stages=stages, **json.loads(json.dumps(over).replace('"MODEL"', json.dumps(str(p)))))

    _reads_by_content(tmp_path, make, _model_folder(tmp_path / "model"), edit, reran, noise)


def test_an_embedded_model_name_stays_a_name(tmp_path, monkeypatch):
    """A folder that happens to carry the embedded model's name is not what the stages load."""
    monkeypatch.chdir(tmp_path)
    r = recipe(tmp_path, stages=["generate"])
    before = fingerprints(r, build_all(r))
    _model_folder(tmp_path / r.model)
    assert fingerprints(r, build_all(r)) == before


def test_big_files_are_hashed_once_per_stamp(tmp_path, monkeypatch):
    """The cache that keeps a model's weights from being read on every plan (plumbing/hashing.py): a second
    look reads nothing, an edit is seen even when the size and mtime are put back, a copy hashes the same."""
    import os

    from plumbing import hashing

    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hashing, "BIG_FILE", 16)
    monkeypatch.setattr(hashing, "SETTLE_NS", 0)
    reads = []
    monkeypatch.setattr(hashing, "file_sha256", lambda p, f=hashing.file_sha256: reads.append(p) or f(p))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 64)
    first = hashing.content_sha256(weights)
    assert hashing.content_sha256(weights) == first and len(reads) == 1
    stat = weights.stat()
    weights.write_bytes(b"b" * 64)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as `cp -p` or `touch -r` could
    assert hashing.content_sha256(weights) == hashing.file_sha256(weights) != first and len(reads) == 3
    copy = tmp_path / "copy.safetensors"
    shutil.copy(weights, copy)
    assert hashing.content_sha256(copy) == hashing.content_sha256(weights)
    small = tmp_path / "small.json"
    small.write_text("{}")  # below BIG_FILE: hashed every time, never kept
    hashing.content_sha256(small)
    assert str(small.resolve()) not in json.loads(hashing.cache_file().read_text())


def test_an_input_that_cannot_be_read_is_one_line(tmp_path, run_cli):
    import os

    fifo = tmp_path / "problems"
    os.mkfifo(fifo)  # there, but neither a file nor a folder
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "root": str(tmp_path / "root"), "stages": ["grpo"],
                                    "grpo": {"data": str(fifo), "reward_funcs": ["gsm8k"]}}))
    res = run_cli("run", str(path), "--dry-run", env={"RLAIF_NO_MODEL": "1"})
    assert res.returncode == 2 and res.stderr.strip() == f"error: stage grpo: data {fifo}: cannot be read (neither a file nor a folder)"


def test_grpos_judge_reward_reads_the_loops_constitution(tmp_path):
    """The judge reward judges by the recipe's constitution (not the built-in one), so an edit of its questions
    re-runs GRPO; a constitution of the stage's own wins."""
    from pipeline.stages import build

    const, data = tmp_path / "constitution.yaml", tmp_path / "problems.jsonl"
    shutil.copy(DEFAULT, const)
    data.write_text('{"prompt": "Say hello."}\n')
    r = recipe(tmp_path, constitution=str(const), stages=["grpo"], grpo={"data": str(data), "reward_funcs": ["judge"]})
    assert build(r, "grpo").judge.constitution == str(const)
    own = recipe(tmp_path, constitution=str(const), stages=["grpo"],
                 grpo={"data": str(data), "reward_funcs": ["judge"], "judge": {"constitution": str(DEFAULT)}})
    assert build(own, "grpo").judge.constitution == str(DEFAULT)
    done = _finished(r)
    _edit_principle(const, "compare")
    assert _replan(r, done) == {"grpo": "run"}


def test_recipe_checks(tmp_path):
    with pytest.raises(ValueError, match="stage 'dpo' reads the output of judge"):
        recipe(tmp_path, stages=["generate", "dpo"])
    with pytest.raises(ValueError, match="unknown stage 'rlhf'"):
        recipe(tmp_path, stages=["generate", "rlhf"])
    with pytest.raises(ValueError, match="list one of dpo, ppo, grpo"):
        recipe(tmp_path, stages=["generate", "judge", "dpo", "grpo", "eval"])
    bad = recipe(tmp_path, dpo={"bogus": 1})
    with pytest.raises(PipelineError, match="stage dpo"):
        build_all(bad)
    assert [s for s in recipe(tmp_path, stages=["eval", "judge", "generate", "dpo"]).stages] == \
        ["generate", "judge", "dpo", "eval"]  # the loop's order, whatever the listing's


def report_numbers(text: str) -> list[str]:
    """The numbers a reader sees: not in code spans, image links or quoted example text."""
    text = "\n".join(line for line in text.splitlines() if not line.startswith(">") and not line.startswith("!["))
    text = re.sub(r"`[^`]*`", "", text)
    return re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])", text)


def metric_values(obj) -> set[str]:
    from pipeline.report import fmt

    out: set[str] = set()
    if isinstance(obj, dict):
        for v in obj.values():
            out |= metric_values(v)
    elif isinstance(obj, list):
        for v in obj:
            out |= metric_values(v)
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        out.add(fmt(obj))
    return out


def check_report(root: Path, stages: list[str]) -> list[str]:
    """Every number of report.md is some stage's metrics.json value; returns the numbers."""
    known: set[str] = set()
    for stage in stages:
        known |= metric_values(json.loads((root / stage / "metrics.json").read_text()))
    numbers = report_numbers((root / "report.md").read_text())
    assert numbers and not [n for n in numbers if n not in known], [n for n in numbers if n not in known]
    return numbers


def test_report_numbers_come_from_the_metrics_files(tmp_path):
    """The report of hand-made metrics files: each number traced, and the headline ones present."""
    from pipeline.report import write_report

    r = recipe(tmp_path, stages=["generate", "judge", "dpo", "eval"])
    root = Path(r.root)
    files = {
        "generate": {"stage": "generate", "counts": {"train": 16, "errors": 0}, "rows": 16, "responses": 32},
        "judge": {"stage": "judge", "counts": {"train": 14, "filtered": 0}, "rows": 14, "p_chosen_mean": 0.5312,
                  "p_chosen_histogram": {"bins": [i / 10 for i in range(11)], "counts": [0, 0, 0, 0, 6, 8, 0, 0, 0, 0]},
                  "position_consistency": 0.2857, "position_consistent_rows": 4, "rows_with_both_orders": 14,
                  "principles_used": {"harm-general": 20, "honest": 8},
                  "constitution": {"name": "c", "version": 1, "sha256": "ab" * 32},
                  "examples": [{"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5", "p_chosen": 0.61}]},
        "dpo": {"method": "dpo", "global_step": 8, "world_size": 1, "train": {"train_loss": 0.6931}},
        "eval": {"n_prompts": 16, "identical_responses": 3,
                 "win_rate": {"value": 0.5625, "lo": 0.41, "hi": 0.7, "n": 16, "unscored": 0},
                 "length_controlled_win_rate": {"value": 0.55, "lo": 0.5, "hi": 0.6},
                 "position_consistency": {"value": 0.25, "lo": 0.1, "hi": 0.5},
                 "length": {"unit": "characters", "correlation": {"pearson": 0.12, "spearman": 0.2}},
                 "per_principle": {"harm-general": {"value": 0.6, "lo": 0.4, "hi": 0.8}}},
    }
    for stage, m in files.items():
        (root / stage).mkdir(parents=True)
        (root / stage / "metrics.json").write_text(json.dumps(m))
    text = write_report(r).read_text()
    numbers = check_report(root, list(files))
    for shown in ("0.562", "0.410", "0.700", "0.550", "0.531", "0.286", "8", "32"):
        assert shown in numbers, shown
    assert "> **prompt:** What is 2 + 2?" in text and (root / "judge_labels.png").is_file()
    files["eval"]["win_rate"]["value"] = 0.75  # a number the report does not show fails the check
    (root / "eval" / "metrics.json").write_text(json.dumps(files["eval"]))
    with pytest.raises(AssertionError):
        check_report(root, list(files))


def test_dry_run_writes_nothing_and_bad_roots_are_refused(tmp_path, run_cli):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "root": str(tmp_path / "root"), "stages": ["generate", "judge"]}))
    res = run_cli("run", str(path), "--dry-run", env={"RLAIF_NO_MODEL": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert "generate  run     not run yet" in res.stdout and not (tmp_path / "root").exists()
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "mine.txt").write_text("keep")
    res = run_cli("run", str(path), "--dry-run", env={"RLAIF_NO_MODEL": "1"})
    assert res.returncode == 2 and "holds no pipeline.json" in res.stderr
    assert (tmp_path / "root" / "mine.txt").read_text() == "keep"
    shutil.rmtree(tmp_path / "root")


@pytest.mark.parametrize("name", ["pipeline-cpu.yaml", "pipeline-gpu.yaml"])
def test_shipped_pipeline_recipes_load_and_plan(name, tmp_path):
    from pipeline.recipe import load_pipeline

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    sets = [f"root={tmp_path / 'root'}", f"prompts={prompts}"]
    done = _finished(load_pipeline(ROOT / "recipes" / name, sets))
    again = load_pipeline(ROOT / "recipes" / name, sets)  # loaded anew: the same fingerprints, so all is reused
    assert set(_replan(again, done).values()) == {"reuse"}


def test_the_demo_is_the_cpu_pipeline_recipe(tmp_path):
    from pipeline.demo import demo_recipe
    from pipeline.recipe import load_pipeline

    shipped = load_pipeline(ROOT / "recipes" / "pipeline-cpu.yaml", [f"root={tmp_path}"])
    assert demo_recipe(tmp_path, "smollm2-135m", "auto") == shipped


def _loop_recipe(tmp_path: Path, root: Path, constitution: Path) -> Path:
    """Every stage on the embedded model, tiny: 4 prompts, 24-token responses, one optimizer step per training
    stage, the transformers engine (no vLLM start-up per stage; tests/test_generate_integration.py and
    tests/test_judge_integration.py run the stages on vLLM)."""
    prompts = tmp_path / "prompts.jsonl"
    if not prompts.exists():
        lines = (ROOT / "pipeline" / "data" / "demo_prompts.jsonl").read_text().splitlines()[:4]
        prompts.write_text("\n".join(lines) + "\n")
    train = {"max_steps": 1, "per_device_train_batch_size": 2, "max_length": 256}
    raw = {"name": "loop", "root": str(root), "constitution": str(constitution), "prompts": str(prompts),
           "stages": ["generate", "revise", "sft", "judge", "reward", "dpo", "eval", "publish"],
           "engine": {"engine": "transformers", "batch_size": 6},
           "generate": {"n": 2, "max_tokens": 24, "temperature": 0.8, "seed": 0},
           "revise": {"max_tokens": 16}, "judge": {"principles_per_pair": 1, "engine": "transformers", "batch_size": 2},
           "sft": train, "reward": train, "dpo": {**train, "learning_rate": 1e-5}, "eval": {"max_tokens": 24},
           "publish": {"repo_id": "me/loop"}}
    path = tmp_path / f"{root.name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _judge_ids(root: Path) -> set[str]:
    from plumbing.runs import load

    return set(load(root / "judge")["id"])


@pytest.mark.integration
@pytest.mark.timeout(1800)  # three loops through every stage
def test_loop_killed_in_the_judge_resumes_to_the_uninterrupted_result(tmp_path, embedded_model_dir, run_cli):
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import BASE_ENV

    from plumbing.runs import shard_files

    constitution = tmp_path / "constitution.yaml"
    shutil.copy(DEFAULT, constitution)
    a = tmp_path / "a"
    res = run_cli("run", str(_loop_recipe(tmp_path, a, constitution)), timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    stages = ["generate", "revise", "sft", "judge", "reward", "dpo", "eval"]
    numbers = check_report(a, stages)
    assert (a / "publish" / "README.md").is_file() and (a / "logs" / "rlaif.log").is_file()
    assert "[judge]" in res.stdout  # our progress on the console, not the libraries' (TRL prints its logs)
    assert "Loading" not in res.stdout and "'loss'" not in res.stdout and "'loss'" in (a / "logs" / "rlaif.log").read_text()

    # b starts from a's finished generate, revise and sft (a root may be copied: fingerprints are root-relative)
    b = tmp_path / "b"
    b.mkdir()
    for stage in ("generate", "revise", "sft"):
        shutil.copytree(a / stage, b / stage)
    state = json.loads((a / "pipeline.json").read_text())
    state["stages"] = {s: v for s, v in state["stages"].items() if s in ("generate", "revise", "sft")}
    (b / "pipeline.json").write_text(json.dumps(state))
    cmd = [sys.executable, "-m", "rlaif", "run", str(_loop_recipe(tmp_path, b, constitution))]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=BASE_ENV, cwd=ROOT,
                            start_new_session=True)
    deadline = time.time() + 600
    while not shard_files(b / "judge") and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert shard_files(b / "judge") and not (b / "report.md").exists()  # killed after its first judge shard
    res = run_cli("run", str(_loop_recipe(tmp_path, b, constitution)), timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "judge     resume" in res.stdout and "generate  reuse" in res.stdout
    assert _judge_ids(b) == _judge_ids(a)
    assert check_report(b, stages) == numbers

    # one principle's question edited: the plan re-runs judge and everything after it, nothing before; the run
    # (stopped after the judge: the stages after it follow a re-run judge, as the resume above showed) rewrites
    # the judge run and leaves the stages before it untouched
    data = yaml.safe_load(constitution.read_text())
    data["principles"][0]["compare"] += " Prefer the shorter response when both are harmless."
    constitution.write_text(yaml.safe_dump(data))
    recipe_b = str(_loop_recipe(tmp_path, b, constitution))
    res = run_cli("run", recipe_b, "--dry-run")
    plan_lines = {line.split()[0]: line.split()[1] for line in res.stdout.splitlines()
                  if line.startswith("  ") and len(line.split()) > 1}
    assert plan_lines == {"generate": "reuse", "revise": "reuse", "sft": "reuse", "judge": "run", "reward": "run",
                          "dpo": "run", "eval": "run", "publish": "run"}, res.stdout
    before = {s: (b / s / "manifest.json").stat().st_mtime_ns for s in ("generate", "revise", "sft", "judge")}
    res = run_cli("run", recipe_b, "--until", "judge", timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "reward    skip" in res.stdout and "judge     run" in res.stdout
    after = {s: (b / s / "manifest.json").stat().st_mtime_ns for s in before}
    assert {s for s in before if before[s] != after[s]} == {"judge"}


def test_a_second_run_on_a_root_in_use_is_refused(tmp_path):
    from filelock import FileLock

    from pipeline.loop import LOCK, run_pipeline

    r = recipe(tmp_path, stages=["generate"])
    root = Path(r.root)
    root.mkdir()
    with FileLock(str(root / LOCK)):  # as a running `rlaif run` holds it
        with pytest.raises(PipelineError, match="another `rlaif run` is using it"):
            run_pipeline(r, say=lambda _: None)
    assert sorted(p.name for p in root.iterdir()) == [LOCK]  # nothing written
