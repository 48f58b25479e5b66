"""An input with nothing to do is refused, not reported as a successful empty run, unless
``allow_empty`` (``--allow-empty``) asks for exactly that (generator/inputs.py ``require_usable``,
judge/build.py ``read_input``). The refusals through the CLI are cases of tests/bad_inputs/cases.py."""

from __future__ import annotations

import pytest

from generator.generate import GenerateConfig, run_generate
from judge.build import run_judge
from judge.config import JudgeConfig
from judge.errors import JudgeError
from plumbing.inputs import InputError
from plumbing.runs import read_errors, read_manifest

EMPTY_PROMPTS = {"empty.jsonl": "", "header.csv": "prompt\n", "blank.jsonl": '{"prompt": "  "}\n'}


@pytest.mark.parametrize("name", sorted(EMPTY_PROMPTS))
def test_generate_refuses_a_file_without_a_usable_prompt_and_writes_nothing(tmp_path, name, monkeypatch):
    monkeypatch.setenv("RLAIF_NO_MODEL", "1")  # no engine may be built either way
    (tmp_path / name).write_text(EMPTY_PROMPTS[name])
    config = GenerateConfig(prompts=tmp_path / name, out=tmp_path / "gen", engine={"engine": "fake"})
    with pytest.raises(InputError, match="--allow-empty"):
        run_generate(config)
    assert not (tmp_path / "gen").exists()
    counts = run_generate(config.model_copy(update={"allow_empty": True}))
    manifest = read_manifest(tmp_path / "gen")
    assert manifest["status"] == "complete" and manifest["runtime"]["allow_empty"] is True
    assert counts.get("train", 0) == 0
    assert len(read_errors(tmp_path / "gen")) == (1 if name == "blank.jsonl" else 0)


def test_generate_refuses_a_prompt_column_no_row_has(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": "a"}\n{"prompt": "b"}\n')
    config = GenerateConfig(prompts=tmp_path / "p.jsonl", out=tmp_path / "gen", engine={"engine": "fake"},
                            prompt_column="question")
    with pytest.raises(InputError, match=r"none of its 2 rows is a usable prompt \(first: row 0: no column 'question'\)"):
        run_generate(config)
    assert not (tmp_path / "gen").exists()


def test_generate_with_one_usable_prompt_runs(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": ""}\n{"prompt": "b"}\n')
    counts = run_generate(GenerateConfig(prompts=tmp_path / "p.jsonl", out=tmp_path / "gen",
                                         engine={"engine": "fake"}))
    assert counts == {"train": 1, "errors": 1}


@pytest.mark.parametrize(("name", "text", "message"), [
    ("pairs.jsonl", "", "has no rows"),
    ("pairs.csv", "prompt,response_a,response_b\n", "has no rows"),
    ("pairs.jsonl", '{"prompt": "hi", "response_a": 1, "response_b": "x"}\n', "none of its 1 rows can be judged"),
])
def test_judge_refuses_an_input_with_nothing_to_judge(tmp_path, name, text, message, monkeypatch):
    monkeypatch.setenv("RLAIF_NO_MODEL", "1")
    (tmp_path / name).write_text(text)
    config = JudgeConfig(input=str(tmp_path / name), out=str(tmp_path / "prefs"), engine="fake")
    with pytest.raises(JudgeError, match=f"{message}.*--allow-empty"):
        run_judge(config)
    assert not (tmp_path / "prefs").exists()
    summary = run_judge(config.model_copy(update={"allow_empty": True}))
    assert read_manifest(tmp_path / "prefs")["status"] == "complete"
    assert summary.counts.get("train", 0) == 0 and summary.judged_pairs == 0
