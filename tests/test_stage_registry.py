"""The stage registry (pipeline/stages.py) and align's method registry (align/__init__.py): what the loop knows of
its stages is read from them, a training method and a stage registered here run in `rlaif run` with their folder,
pipeline.json entry, metrics and report lines, and unregistering them leaves the loop as it was. One run parses
each constitution file once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from pydantic import Field
from typer.testing import CliRunner

from align import ALIGN_METHODS, Method
from align.config import _Recipe
from pipeline.recipe import PipelineRecipe
from pipeline.stages import Stage, Training, register, stages, unregister, upstream
from plumbing.atomic import write_text

PROMPTS = '{"prompt": "How do I keep basil alive?"}\n{"prompt": "Name a prime."}\n'
BUILT_IN = ("generate", "revise", "sft", "judge", "reward", "dpo", "ppo", "grpo", "eval", "publish")


class ToyRecipe(_Recipe):
    """A training method that trains nothing: it counts the revise run's rows and writes a model folder."""

    method: ClassVar[str] = "toy"
    trl_config: ClassVar[str] = ""
    learning_rate: float = Field(0.1, gt=0, description="Unused.")
    steps: int = Field(2, gt=0, description="The global_step its metrics report.")

    def check_trl_keys(self) -> None:
        """No TRL config to check."""


def toy_data(recipe: ToyRecipe):
    from plumbing.runs import load

    return load(recipe.data.path)


def toy_train(recipe: ToyRecipe) -> dict[str, Any]:
    rows = toy_data(recipe).num_rows
    metrics = {"method": "toy", "global_step": recipe.steps, "world_size": 1, "rows": rows,
               "train": {"train_loss": 1.0 / rows}}
    write_text(Path(recipe.work_dir) / "config.json", json.dumps({"model_type": "toy"}) + "\n")
    write_text(Path(recipe.work_dir) / "metrics.json", json.dumps(metrics) + "\n")
    return metrics


def _count_options(recipe, name: str) -> dict:
    return {"input": str(recipe.path("generate")), "out": str(recipe.path(name)), **recipe.options(name)}


def _count_run(config: dict, ctx) -> str:
    from plumbing.runs import load

    rows = load(config["input"]).num_rows
    Path(config["out"]).mkdir(parents=True, exist_ok=True)
    write_text(Path(config["out"]) / "count.json", json.dumps({"rows": rows}) + "\n")
    return f"{rows} rows counted"


def _count_metrics(out: Path, ctx) -> dict:
    return {"stage": "count", "rows": json.loads((out / "count.json").read_text())["rows"], "counts": {}}


@pytest.fixture
def toys(monkeypatch):
    """A training method (align entry + the pipeline's Training entry) and a plain stage reading generate."""
    monkeypatch.setitem(ALIGN_METHODS, "toy", Method(ToyRecipe, toy_train, help="A toy.", data=toy_data))
    register("toy", Training(data="revise"))
    register("count", Stage(_count_options, lambda recipe, raw, checking: raw, _count_run, reads=("generate",),
                            needs=("generate",), metrics=_count_metrics), before=None)
    try:
        yield
    finally:
        unregister("toy")
        unregister("count")


def _rlaif(*args: str):
    from rlaif.cli import app

    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.output


def test_the_loops_tables_are_read_from_the_registry():
    assert tuple(stages()) == BUILT_IN
    assert {s: upstream(s) for s in BUILT_IN} == {
        "generate": (), "revise": (), "sft": ("revise",), "judge": ("generate",), "reward": ("judge",),
        "dpo": ("judge", "sft"), "ppo": ("reward", "sft"), "grpo": ("sft",), "eval": ("sft", "dpo", "ppo", "grpo"),
        "publish": ("judge",)}
    assert {s: e.needs for s, e in stages().items() if e.needs} == {
        "sft": ("revise",), "judge": ("generate",), "reward": ("judge",), "dpo": ("judge",), "ppo": ("reward",),
        "eval": ("sft", "dpo", "ppo", "grpo"), "publish": ("judge",)}
    assert [s for s, e in stages().items() if e.role == "policy"] == ["dpo", "ppo", "grpo"]
    assert set(ALIGN_METHODS) == {s for s, e in stages().items() if e.role}
    from rlaif.cli import app

    shown = CliRunner().invoke(app, ["align", "--help"], terminal_width=200).output
    assert all(f" {name} " in shown and ALIGN_METHODS[name].help[:40] in shown for name in ALIGN_METHODS)


def test_a_registered_method_and_stage_run_in_rlaif_run_and_unregister_cleanly(tmp_path, monkeypatch, toys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.jsonl").write_text(PROMPTS)
    recipe = {"name": "toy loop", "root": "r", "prompts": "p.jsonl", "stages": ["count", "toy", "revise", "generate"],
              "engine": {"engine": "fake"}, "revise": {"max_tokens": 8}, "toy": {"steps": 3}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(recipe))

    out = _rlaif("run", "p.yaml")
    root = tmp_path / "r"
    state = json.loads((root / "pipeline.json").read_text())
    assert [line.split()[0] for line in out.splitlines()[1:5]] == ["generate", "revise", "toy", "count"]  # the
    assert set(state["stages"]) == {"generate", "revise", "toy", "count"}  # registry's order, not the listing's
    assert all(s["finished"] and s["fingerprint"] for s in state["stages"].values())
    assert json.loads((root / "toy" / "manifest.json").read_text())["stage"] == "align-toy"
    toy = json.loads((root / "toy" / "metrics.json").read_text())
    revised = json.loads((root / "revise" / "metrics.json").read_text())["rows"]
    assert toy["global_step"] == 3 and toy["rows"] == revised == 2
    assert json.loads((root / "count" / "metrics.json").read_text())["rows"] == 2
    report = (root / "report.md").read_text()
    assert "- **toy**: 3 steps, mean training loss 0.500" in report and "| count | 2 rows |" in report
    assert "[toy] 3 steps -> r/toy" in out and "[count] 2 rows counted" in out

    again = _rlaif("run", "p.yaml")  # the root holds the new stages' folders: reused, not refused
    assert "toy       reuse" in again and "count     reuse" in again
    changed = _rlaif("run", "p.yaml", "--set", "toy.steps=4", "--dry-run")
    assert "toy       run     its spec or an input changed" in changed and "count     reuse" in changed

    unregister("toy")
    unregister("count")
    monkeypatch.delitem(ALIGN_METHODS, "toy")
    assert tuple(stages()) == BUILT_IN
    without_toy = {k: v for k, v in recipe.items() if k != "toy"}
    with pytest.raises(ValueError, match="unknown stage 'toy'; stages are generate, revise, sft, judge, reward, "
                                         "dpo, ppo, grpo, eval, publish"):
        PipelineRecipe.model_validate({**without_toy, "stages": ["revise", "toy"]})
    with pytest.raises(ValueError, match=r"toy\n  Extra inputs are not permitted"):
        PipelineRecipe.model_validate({**recipe, "stages": ["revise"]})


def test_one_run_parses_its_constitution_once(tmp_path, monkeypatch):
    """Fingerprinting, the input check, the judge and the judge's metrics share one parse of the file."""
    from constitution import loader
    from pipeline.loop import run_pipeline

    parsed = []
    real = loader.parse_constitution
    monkeypatch.setattr(loader, "parse_constitution", lambda text, source="<string>": parsed.append(source)
                        or real(text, source))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.jsonl").write_text(PROMPTS)
    const = tmp_path / "c.yaml"
    const.write_text((Path(loader.DEFAULT_PATH)).read_text())
    recipe = PipelineRecipe.model_validate({
        "name": "once", "root": "r", "prompts": "p.jsonl", "constitution": str(const), "stages": ["generate", "judge"],
        "engine": {"engine": "fake"}, "judge": {"engine": "fake"}, "generate": {"max_tokens": 8}})
    run_pipeline(recipe, say=lambda _: None)
    assert json.loads((tmp_path / "r" / "judge" / "metrics.json").read_text())["constitution"]["sha256"]
    assert parsed == [str(const)]


def test_an_edited_constitution_is_parsed_again(tmp_path):
    from constitution import DEFAULT_PATH
    from pipeline.constitutions import Constitutions

    path = tmp_path / "c.yaml"
    text = Path(DEFAULT_PATH).read_text()
    path.write_text(text)
    memo = Constitutions()
    first = memo.load(path)
    assert memo.load(path) is first
    path.write_text(text + "\n# edited\n")  # other bytes, the same constitution
    assert memo.load(path) is not first and memo.load(path).sha256() == first.sha256()
