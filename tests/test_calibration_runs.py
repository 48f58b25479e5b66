"""Batch calibration over a whole run (judge/calibrated_run.py): the labels of ``rlaif judge --calibrate
batch`` depend neither on the batch size nor on where a resumed run restarted, and a run whose prior is
fixed refuses pairs that would change it. Fake engines only."""

from __future__ import annotations

import json

import pytest

from generator.engines.fake import FakeEngine
from judge.build import run_judge
from judge.calibration import MIN_VOTES
from judge.config import JudgeConfig
from judge.errors import JudgeError
from plumbing.runs import read_manifest


def _pairs(path, n):
    path.write_text("".join(json.dumps({"prompt": f"question {i}", "response_a": f"first answer {i}",
                                        "response_b": f"second answer {i}"}) + "\n" for i in range(n)))
    return path


class DyingEngine(FakeEngine):
    """The hash-based fake judge, killed (an exception) once it has scored ``prompts_left`` prompts."""

    def __init__(self, prompts_left: int):
        super().__init__()
        self.prompts_left = prompts_left

    def score_choices(self, prompts, options, top_k=20):
        self.prompts_left -= len(prompts)
        if self.prompts_left < 0:
            raise RuntimeError("killed")
        return super().score_choices(prompts, options, top_k)


def _rows(out) -> list[dict]:
    from plumbing.runs import load_all

    runs = load_all(out)
    return sorted((dict(r, split=split) for split, ds in runs.items() for r in ds), key=lambda r: r["id"])


def _config(pairs, out, **kw) -> JudgeConfig:
    return JudgeConfig(input=str(pairs), out=str(out), principles_per_pair=3, calibrate="batch", **kw)


def test_calibrated_labels_do_not_depend_on_batch_size_or_resume(tmp_path):
    """16 pairs judged by the hash-based fake judge (a different p_a per prompt) three ways: in one batch, in
    batches of 3, and killed in its third batch of 4 then resumed in batches of 5. The rows are identical,
    float for float, and so is the recorded prior (a prior per batch gave each batch its own labels)."""
    pairs = _pairs(tmp_path / "pairs.jsonl", 16)
    whole, small, killed = tmp_path / "whole", tmp_path / "small", tmp_path / "killed"
    first = FakeEngine()
    run_judge(_config(pairs, whole, batch_size=64, min_confidence=0.55), engine=first)
    run_judge(_config(pairs, small, batch_size=3, min_confidence=0.55), engine=FakeEngine())
    dying = DyingEngine(prompts_left=50)  # 4 pairs x 1-3 principles x 2 orders per batch
    with pytest.raises(RuntimeError, match="killed"):
        run_judge(_config(pairs, killed, batch_size=4, min_confidence=0.55), engine=dying)
    assert read_manifest(killed)["status"] == "running"
    assert not list((killed / "data").glob("*.parquet"))  # no row is labelled before every pair is judged
    assert len(list((killed / "calibration").glob("verdicts-*.jsonl"))) >= 2
    resumed = FakeEngine()
    run_judge(_config(pairs, killed, batch_size=5, min_confidence=0.55), engine=resumed)
    rows = {name: _rows(out) for name, out in (("whole", whole), ("small", small), ("killed", killed))}
    assert len(rows["whole"]) == 16 and rows["small"] == rows["whole"] and rows["killed"] == rows["whole"]
    priors = [read_manifest(out)["calibration"] for out in (whole, small, killed)]
    assert priors[0]["applied"] and priors[0]["votes"] >= MIN_VOTES and priors[1] == priors[0] == priors[2]
    assert any(r["split"] == "filtered" for r in rows["whole"]) and any(r["split"] == "train" for r in rows["whole"])
    assert all(v["p_a_raw"] is not None and v["p_a"] != v["p_a_raw"] for r in rows["whole"] for v in r["votes"])
    assert 0 < resumed.calls["score"] < first.calls["score"]  # the resumed run judged only what was left


def test_a_run_whose_prior_is_fixed_refuses_more_pairs(tmp_path):
    """A complete calibrated run of 12 pairs asked for 16 refuses with one clear error before it touches the
    run (the manifest stays complete); asked for the same 12 it judges nothing again."""
    pairs = _pairs(tmp_path / "pairs.jsonl", 16)
    out = tmp_path / "prefs"
    run_judge(_config(pairs, out, limit=12), engine=FakeEngine())
    before = (out / "manifest.json").read_text()
    with pytest.raises(JudgeError, match="judging 4 more pairs would change the prior of rows already written"):
        run_judge(_config(pairs, out, limit=16), engine=FakeEngine())
    assert (out / "manifest.json").read_text() == before
    again = FakeEngine()
    run_judge(_config(pairs, out, limit=12), engine=again)
    assert again.calls["score"] == 0 and read_manifest(out)["status"] == "complete"
    run_judge(_config(pairs, out, limit=16, overwrite=True), engine=FakeEngine())
    assert read_manifest(out)["counts"]["errors"] == 0
    assert sum(read_manifest(out)["counts"].get(s, 0) for s in ("train", "filtered")) == 16


def test_a_run_killed_while_writing_its_rows_labels_the_rest_with_the_same_prior(tmp_path, monkeypatch):
    """Every pair judged, the prior fixed, then a kill after the first shard of rows: the resumed run judges
    nothing, reads the recorded prior and writes the other rows exactly as an uninterrupted run does."""
    import judge.build

    pairs = _pairs(tmp_path / "pairs.jsonl", 16)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_judge(_config(pairs, whole, batch_size=4), engine=FakeEngine())
    write, calls = judge.build._write_labels, []

    def dies_after_one_shard(*args, **kwargs):
        if calls:
            raise RuntimeError("killed")
        calls.append(1)
        return write(*args, **kwargs)

    monkeypatch.setattr(judge.build, "_write_labels", dies_after_one_shard)
    with pytest.raises(RuntimeError, match="killed"):
        run_judge(_config(pairs, killed, batch_size=4), engine=FakeEngine())
    monkeypatch.setattr(judge.build, "_write_labels", write)
    assert 0 < len(_rows(killed)) < 16 and list((killed / "calibration").glob("prior-*.json"))
    again = FakeEngine()
    run_judge(_config(pairs, killed, batch_size=4), engine=again)
    assert again.calls["score"] == 0 and _rows(killed) == _rows(whole)
