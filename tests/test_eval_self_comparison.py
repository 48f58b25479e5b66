"""``rlaif eval --policy X --reference X`` says in one line that a model is compared with itself; a refused
eval says only its error (the bad-input corpus runs every eval case with policy = reference)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import BASE_ENV


@pytest.mark.parametrize(("reference", "warned"), [("fake-a", True), ("./fake-a/", True), ("fake-b", False)])
def test_eval_warns_once_when_the_policy_is_the_reference(tmp_path, reference, warned):
    (tmp_path / "fake-a").mkdir()  # a folder named like the policy: the same model however it is spelled
    (tmp_path / "p.jsonl").write_text('{"prompt": "Name a prime."}\n{"prompt": "Name a colour."}\n')
    res = subprocess.run([sys.executable, "-m", "rlaif", "eval", "--policy", "fake-a", "--reference", reference,
                          "--judge-model", "fake-a", "--engine", "fake", "--prompts", "p.jsonl", "--out", "ev",
                          "--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=BASE_ENV)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stderr.splitlines()
    if warned:
        assert len(lines) == 1 and "compared with itself" in lines[0], res.stderr
        assert lines[0].startswith("WARNING rlaif.eval: --policy and --reference are the same model")
    else:
        assert lines == [], res.stderr
    assert "win-rate" in res.stdout
