"""Batch calibration of ``rlaif judge --calibrate batch`` (judge/calibration.py, judge/calibrated_run.py) on inputs
the run-level tests do not cover: one option order over pairs whose second response is the better one, a pair
file whose rows share an id, and a resumed run whose --limit went down and then up. Fake engines only."""

from __future__ import annotations

import json

import pytest
from test_eval import (  # no position bias: 0.9 for the response holding GOOD, wherever it is shown
    GOOD,
    oracle,
)

from generator.engines.fake import FakeEngine
from judge.build import run_judge
from judge.config import JudgeConfig
from judge.errors import JudgeError
from plumbing.runs import load_all, read_manifest


def _write(path, rows: list[dict]):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _rows(out) -> list[dict]:
    return sorted((dict(r, split=split) for split, ds in load_all(out).items() for r in ds), key=lambda r: r["id"])


def test_one_order_calibration_does_not_flip_a_revision_that_is_better_on_every_pair(tmp_path):
    """40 pairs laid out as a revise run's (draft first, revision second), the revision better on each; an
    unbiased judge gives it 0.9, --orders one. As read every row chooses the revision at 0.9. With
    --calibrate batch the one order's mean P(A) (0.1) is the prior, every vote becomes 0.5000000000000004 and
    every row chooses the DRAFT: the real difference the pooled prior was meant to keep is cancelled and
    turned around. Refusing --orders one with --calibrate batch would also do."""
    pairs = _write(tmp_path / "pairs.jsonl", [{"prompt": f"question {i}", "response_a": f"draft answer {i}",
                                               "response_b": f"{GOOD} revised answer {i}"} for i in range(40)])
    raw = tmp_path / "raw"
    run_judge(JudgeConfig(input=str(pairs), out=str(raw), principles_per_pair=2, orders="one"),
              engine=FakeEngine(scorer=oracle))
    assert all(GOOD in r["chosen"][0]["content"] and r["p_chosen"] == pytest.approx(0.9) for r in _rows(raw))
    out = tmp_path / "calibrated"
    try:
        config = JudgeConfig(input=str(pairs), out=str(out), principles_per_pair=2, orders="one", calibrate="batch")
        run_judge(config, engine=FakeEngine(scorer=oracle))
    except (ValueError, JudgeError) as e:  # a clear refusal is a fix too
        assert "orders" in str(e)
        return
    rows = _rows(out)
    assert len(rows) == 40
    assert sum(GOOD in r["chosen"][0]["content"] for r in rows) == 40
    assert all(r["p_chosen"] > 0.6 for r in rows)


def test_calibrated_rows_keep_their_own_verdict_when_pair_file_rows_share_an_id(tmp_path):
    """Two pair-file rows with the same ``id`` (e.g. one id per conversation, two pairs of it): the first has the
    better reply as response_a, the second as response_b. Uncalibrated, the row written for the id chooses the
    first pair's better reply. Calibrated (prior 0.5 for this unbiased judge, so the labels are the ones read),
    the calibration store keys verdicts by pair id, the second pair's verdict replaces the first's, and the row
    of the first pair is labelled with it: its WORSE reply is chosen."""
    rows = [{"id": "dup", "prompt": "q first", "response_a": f"{GOOD} one", "response_b": "bad one"},
            {"id": "dup", "prompt": "q second", "response_a": "bad two", "response_b": f"{GOOD} two"}]
    rows += [{"prompt": f"q{i}", "response_a": f"{GOOD} x{i}", "response_b": f"y{i}"} if i % 2 else
             {"prompt": f"q{i}", "response_a": f"y{i}", "response_b": f"{GOOD} x{i}"} for i in range(30)]
    pairs = _write(tmp_path / "pairs.jsonl", rows)
    chosen = {}
    for mode in ("none", "batch"):
        out = tmp_path / mode
        try:
            run_judge(JudgeConfig(input=str(pairs), out=str(out), principles_per_pair=2, calibrate=mode),
                      engine=FakeEngine(scorer=oracle))
        except JudgeError as e:  # refusing a repeated id is a fix too
            assert "dup" in str(e)
            return
        chosen[mode] = {r["id"]: r["chosen"][0]["content"] for r in _rows(out)}
    assert read_manifest(tmp_path / "batch")["calibration"]["applied"]
    assert all(GOOD in text for text in chosen["none"].values())
    assert chosen["batch"] == chosen["none"]


def test_a_resume_with_a_smaller_then_larger_limit_does_not_label_pairs_outside_the_prior(tmp_path, monkeypatch):
    """--limit 16 killed after 3 batches of 4 (12 pairs' verdicts stored), resumed with --limit 8 (the prior is
    fixed over those 8 pairs: 48 votes), then resumed with --limit 12. ``refuse_more`` counts only pairs with no
    stored verdict, so pairs 9-12 are accepted and labelled with the 8-pair prior; the manifest says 48 votes
    for 12 rows, and all 12 rows differ from an uninterrupted --limit 12 run (prior over 72 votes). Expected:
    refused like any pair the prior does not cover, or labelled as the uninterrupted run labels them."""
    import judge.build

    pairs = _write(tmp_path / "pairs.jsonl", [{"prompt": f"question {i}", "response_a": f"first answer {i}",
                                               "response_b": f"second answer {i}"} for i in range(16)])

    def config(out, limit):
        return JudgeConfig(input=str(pairs), out=str(out), principles_per_pair=3, calibrate="batch",
                           batch_size=4, limit=limit)

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    run_judge(config(whole, 12), engine=FakeEngine())
    judge_batch, calls = judge.build._judge_batch, []

    def dies_in_the_fourth_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("killed")
        return judge_batch(*args, **kwargs)

    monkeypatch.setattr(judge.build, "_judge_batch", dies_in_the_fourth_batch)
    with pytest.raises(RuntimeError, match="killed"):
        run_judge(config(resumed, 16), engine=FakeEngine())
    monkeypatch.setattr(judge.build, "_judge_batch", judge_batch)
    assert len(list((resumed / "calibration").glob("verdicts-*.jsonl"))) == 3
    run_judge(config(resumed, 8), engine=FakeEngine())
    assert len(_rows(resumed)) == 8
    try:
        run_judge(config(resumed, 12), engine=FakeEngine())
    except JudgeError as e:
        assert "would change the prior" in str(e)
        return
    assert read_manifest(resumed)["calibration"] == read_manifest(whole)["calibration"]
    assert _rows(resumed) == _rows(whole)
