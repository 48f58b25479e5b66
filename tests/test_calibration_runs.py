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


def _calibrated_eval(tmp_path, out, limit, judge):
    """``rlaif eval`` of 16 prompts, judged in batches of 4 with --calibrate batch, on hash-based fake engines."""
    from evaluation.evaluate import EvalConfig, evaluate
    from generator.engines.options import EngineOptions

    prompts = tmp_path / "prompts.jsonl"
    if not prompts.exists():
        prompts.write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(16)))
    config = EvalConfig(prompts=prompts, out=out, limit=limit, resamples=100,
                        policy=EngineOptions(model="pol", engine="fake"), reference=EngineOptions(model="ref", engine="fake"),
                        judge=JudgeConfig(model="judge", engine="fake", principles_per_pair=4, calibrate="batch",
                                          batch_size=4))
    return evaluate(config, engines={"policy": FakeEngine("pol"), "reference": FakeEngine("ref"), "judge": judge})


def test_an_eval_resumed_with_a_smaller_then_larger_limit_refuses_prompts_outside_its_prior(tmp_path, monkeypatch):
    """rlaif eval keeps its verdicts in the same store: --limit 16 killed in its fourth judge batch (12 prompts'
    verdicts stored), resumed with --limit 8 (the prior is fixed over those 8 prompts), then asked for
    --limit 12. Prompts 9-12 have stored verdicts, but the prior never saw them: refused with one error that
    leaves the run as it was (the store counted only prompts without a verdict and labelled them)."""
    import judge.scoring
    from evaluation.evaluate import EvalError

    judge_pairs, calls = judge.scoring.judge_pairs, []

    def dies_in_the_fourth_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("killed")
        return judge_pairs(*args, **kwargs)

    out = tmp_path / "eval"
    monkeypatch.setattr(judge.scoring, "judge_pairs", dies_in_the_fourth_batch)
    with pytest.raises(RuntimeError, match="killed"):
        _calibrated_eval(tmp_path, out, 16, FakeEngine("judge"))
    monkeypatch.setattr(judge.scoring, "judge_pairs", judge_pairs)
    assert len(list((out / "calibration").glob("verdicts-*.jsonl"))) == 3
    m = _calibrated_eval(tmp_path, out, 8, FakeEngine("judge"))
    assert m["win_rate"]["n"] == 8 and m["calibration"]["applied"]
    before = (out / "manifest.json").read_text()
    with pytest.raises(EvalError, match="judging 4 more pairs would change the prior of rows already written"):
        _calibrated_eval(tmp_path, out, 12, FakeEngine("judge"))
    assert (out / "manifest.json").read_text() == before


def test_a_run_whose_prior_was_not_applied_says_so_when_it_refuses_more_pairs(tmp_path):
    """4 pairs x 3 principles x 2 orders: fewer votes than MIN_VOTES, so the prior is recorded but not applied
    and the labels are as read. Asked for 4 more pairs, the refusal says that, not that the labels are
    calibrated by the prior. The same run with a lower --limit is a subset of its prior's pairs: accepted."""
    pairs = _pairs(tmp_path / "pairs.jsonl", 8)
    out = tmp_path / "prefs"
    run_judge(_config(pairs, out, limit=4), engine=FakeEngine())
    assert not read_manifest(out)["calibration"]["applied"]
    with pytest.raises(JudgeError) as e:
        run_judge(_config(pairs, out, limit=8), engine=FakeEngine())
    message = str(e.value)
    assert "labels are the probabilities as read" in message and "was not applied" in message
    assert "calibrated by the prior" not in message and "judging 4 more pairs would change the prior" in message
    again = FakeEngine()
    run_judge(_config(pairs, out, limit=2), engine=again)
    assert again.calls["score"] == 0 and read_manifest(out)["status"] == "complete"


def test_pair_file_rows_sharing_an_id_are_each_judged_in_both_modes(tmp_path):
    """Two rows with one ``id`` and two identical rows without one: four pairs, four rows, calibrated or not
    (the run writer keeps one row per id, so an uncalibrated run silently dropped the repeats)."""
    rows = [{"id": "dup", "prompt": "q first", "response_a": "one", "response_b": "two"},
            {"id": "dup", "prompt": "q second", "response_a": "three", "response_b": "four"},
            {"prompt": "q same", "response_a": "five", "response_b": "six"},
            {"prompt": "q same", "response_a": "five", "response_b": "six"}]
    rows += [{"prompt": f"q{i}", "response_a": f"a{i}", "response_b": f"b{i}"} for i in range(8)]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for mode in ("none", "batch"):
        out = tmp_path / mode
        run_judge(JudgeConfig(input=str(pairs), out=str(out), principles_per_pair=2, calibrate=mode),
                  engine=FakeEngine())
        written = _rows(out)
        assert len(written) == 12 and len({r["id"] for r in written}) == 12
        prompts = [r["prompt"][-1]["content"] for r in written]
        assert prompts.count("q same") == 2 and {"q first", "q second"} <= set(prompts)


def test_the_store_refuses_a_key_list_with_a_repeat(tmp_path):
    """Two pairs under one key would get one verdict (the store once labelled all three with two verdicts):
    the store refuses to label such a list."""
    from judge.calibrated_run import CalibrationStore, verdict_record
    from judge.scoring import Vote, make_verdict

    store = CalibrationStore(tmp_path, "0" * 64)
    store.add([verdict_record(k, make_verdict([Vote("p", "ab", p, None), Vote("p", "ba", 0.5, None)], ["p"]))
               for k, p in (("k", 0.7), ("j", 0.2))])
    with pytest.raises(ValueError, match="pair key 'k' is given more than once"):
        store.calibrated(["k", "j", "k"])
