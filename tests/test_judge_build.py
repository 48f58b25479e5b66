"""The judge stage (judge/build.py, rlaif judge) on FakeEngine over small runs and files."""

from __future__ import annotations

import json
import math
import re

import pytest

from generator.engines.fake import FakeEngine
from generator.records import RESPONSES, REVISIONS
from judge.build import run_judge
from judge.config import JudgeConfig
from judge.records import PREFERENCES
from plumbing.runs import RunError, RunWriter, item_id, read_errors, read_manifest
from rlaif.runs import load, load_all

CONSTITUTION = """
name: test
version: 1
principles:
  - {id: kind, critique: "c", revision: "r", compare: "Which response is kinder?", weight: 1.0}
  - {id: safe, critique: "c", revision: "r", compare: "Which response is safer?", weight: 3.0}
"""


def _option(prompt: str, letter: str) -> str:
    return prompt.rsplit(f"({letter}) ", 1)[1].split("\n", 1)[0]


def quality(text: str) -> int:
    m = re.search(r"Q(\d)", text)
    return int(m.group(1)) if m else 0


def quality_scorer(prompt, options):
    """P(A better) = sigmoid(quality(A) - quality(B)): Q3 vs Q1 -> 1 / (1 + e^-2) = 0.881."""
    d = quality(_option(prompt, "A")) - quality(_option(prompt, "B"))
    p_a = 1 / (1 + math.exp(-d))
    return {"A": math.log(p_a), "B": math.log(1 - p_a)}


class Counting(FakeEngine):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.scored = 0

    def score_choices(self, prompts, options, top_k=20):
        self.scored += len(prompts)
        return super().score_choices(prompts, options, top_k)


@pytest.fixture
def constitution_file(tmp_path):
    p = tmp_path / "const.yaml"
    p.write_text(CONSTITUTION)
    return str(p)


def _msgs(text):
    return [{"role": "user", "content": text}]


@pytest.fixture
def generate_run(tmp_path):
    """3 prompts x 4 responses (one a duplicate, so 3 distinct: Q1, Q2, Q3)."""
    out = tmp_path / "gen"
    w = RunWriter(out, "generate", {"model": "m", "n": 4}, RESPONSES)
    rows = [{"id": item_id("p", k), "prompt": _msgs(f"question {k}"), "model": "m", "sampling": "{}",
             "responses": [f"Q2 answer {k}", f"Q1 answer {k}", f"Q3 answer {k}", f"Q1 answer {k}"]}
            for k in range(3)]
    w.write(rows)
    w.finish()
    return str(out)


def cfg(inp, out, const, **kw) -> JudgeConfig:
    return JudgeConfig(input=str(inp), out=str(out), constitution=const, engine="fake", **kw)


def test_generate_run_all_pairs_schema(generate_run, constitution_file, tmp_path):
    """3 distinct responses -> 3 pairs per prompt -> 9 rows; the higher Q always chosen."""
    out = tmp_path / "prefs"
    summary = run_judge(cfg(generate_run, out, constitution_file), engine=FakeEngine(scorer=quality_scorer))
    ds = load(out)
    assert ds.features == PREFERENCES
    assert len(ds) == 9 and summary.counts["train"] == 9
    from constitution import load_constitution
    from prompts import PAIRWISE, template_sha256

    for row in ds:
        c, r = row["chosen"][0], row["rejected"][0]
        assert c["role"] == "assistant" and quality(c["content"]) > quality(r["content"])
        d = quality(c["content"]) - quality(r["content"])
        assert row["p_chosen"] == pytest.approx(1 / (1 + math.exp(-d)))
        # votes are relative to chosen: "ab" = chosen shown as (A); p_chosen is recomputable from them
        # and the principle draws: per principle the mean over orders, then the plain mean over draws
        def p_of(pid, votes=row["votes"]):
            ps = [v["p_a"] if v["order"] == "ab" else 1 - v["p_a"] for v in votes if v["principle_id"] == pid]
            return sum(ps) / len(ps)
        draws = row["principle_ids"]
        assert sum(p_of(pid) for pid in draws) / len(draws) == pytest.approx(row["p_chosen"])
        assert len(draws) == 4 and set(draws) <= {"kind", "safe"} and len(row["votes"]) == 2 * len(set(draws))
        assert row["position_consistent"] is True
        assert row["judge_model"] == "fake-model"  # the engine that judged, not the config default
        assert row["constitution_sha256"] == load_constitution(constitution_file).sha256()
        assert row["template_sha256"] == template_sha256([PAIRWISE])
        assert row["prompt"][0]["role"] == "user"
    manifest = read_manifest(out)
    assert manifest["stage"] == "judge" and manifest["status"] == "complete"
    assert manifest["spec"]["input"] == {"kind": "generate", "sha256": read_manifest(generate_run)["spec_sha256"]}
    assert "batch_size" not in json.dumps(manifest["spec"])
    assert manifest["runtime"]["constitution"] == constitution_file  # where `rlaif publish` finds the file


def test_resume_skips_finished_ids(generate_run, constitution_file, tmp_path):
    """limit=1 judges 3 pairs (x 2 principles x 2 orders = 12 prompts); the full re-run only the
    other 6 pairs (24 prompts); a third run scores nothing."""
    out = tmp_path / "prefs"
    first = Counting(scorer=quality_scorer)
    run_judge(cfg(generate_run, out, constitution_file, limit=1, batch_size=2), engine=first)
    def prompts_for(rows):  # 2 orders x the distinct principles drawn for each pair
        return sum(2 * len(set(r["principle_ids"])) for r in rows)

    assert len(load(out)) == 3 and first.scored == prompts_for(load(out))
    second = Counting(scorer=quality_scorer)
    run_judge(cfg(generate_run, out, constitution_file, batch_size=5), engine=second)
    assert len(load(out)) == 9 and second.scored == prompts_for(load(out)) - first.scored
    third = Counting(scorer=quality_scorer)
    summary = run_judge(cfg(generate_run, out, constitution_file), engine=third)
    assert third.scored == 0 and summary.counts["train"] == 9
    assert len(set(load(out)["id"])) == 9


def test_changed_spec_refused(generate_run, constitution_file, tmp_path):
    out = tmp_path / "prefs"
    run_judge(cfg(generate_run, out, constitution_file, limit=1), engine=FakeEngine(scorer=quality_scorer))
    with pytest.raises(RunError, match="seed"):
        run_judge(cfg(generate_run, out, constitution_file, seed=1), engine=FakeEngine(scorer=quality_scorer))
    with pytest.raises(RunError, match="orders"):
        run_judge(cfg(generate_run, out, constitution_file, orders="one"), engine=FakeEngine())
    # runtime knobs are not in the spec
    run_judge(cfg(generate_run, out, constitution_file, batch_size=1), engine=FakeEngine(scorer=quality_scorer))
    run_judge(cfg(generate_run, out, constitution_file, seed=1, overwrite=True),
              engine=FakeEngine(scorer=quality_scorer))
    assert read_manifest(out)["spec"]["seed"] == 1 and len(load(out)) == 9


def test_min_confidence_filtered_split(generate_run, constitution_file, tmp_path):
    """Q gaps of 1 give p = sigmoid(1) = 0.731 < 0.8 -> filtered; gaps of 2 give 0.881 -> train."""
    out = tmp_path / "prefs"
    summary = run_judge(cfg(generate_run, out, constitution_file, min_confidence=0.8),
                        engine=FakeEngine(scorer=quality_scorer))
    splits = load_all(out)
    assert len(splits["train"]) == 3 and len(splits["filtered"]) == 6
    assert all(p >= 0.8 for p in splits["train"]["p_chosen"])
    assert all(0.5 <= p < 0.8 for p in splits["filtered"]["p_chosen"])
    assert splits["filtered"].features == PREFERENCES
    assert read_manifest(out)["filter"]["reason"] == "p_chosen < min_confidence (0.8)"
    assert summary.counts["filtered"] == 6


def test_best_worst(tmp_path, constitution_file):
    """4 responses Q0..Q3 (shuffled): all 6 pairs judged, Bradley-Terry ranks Q3 best and Q0 worst;
    the fitted P(best beats worst) = sigmoid(3) = 0.953 under this exactly-BT judge."""
    gen = tmp_path / "gen"
    w = RunWriter(gen, "generate", {"n": 4}, RESPONSES)
    w.write([{"id": "a", "prompt": _msgs("q"), "responses": ["Q1 x", "Q3 x", "Q0 x", "Q2 x"], "model": "m",
              "sampling": "{}"}])
    w.finish()
    engine = Counting(scorer=quality_scorer)
    run_judge(cfg(gen, tmp_path / "out", constitution_file, pairing="best-worst"), engine=engine)
    assert 6 * 1 * 2 <= engine.scored <= 6 * 2 * 2  # 6 pairs x distinct principles drawn x 2 orders
    ds = load(tmp_path / "out")
    assert len(ds) == 1
    row = ds[0]
    assert row["id"] == "a"
    assert row["chosen"][0]["content"] == "Q3 x" and row["rejected"][0]["content"] == "Q0 x"
    assert row["p_chosen"] == pytest.approx(1 / (1 + math.exp(-3)), abs=1e-4)


def test_revise_run(tmp_path, constitution_file):
    """init_response (Q0) vs the final revision (Q2): the revision is chosen."""
    rev = tmp_path / "rev"
    w = RunWriter(rev, "revise", {"n": 1}, REVISIONS)
    w.write([{"id": "r1", "prompt": _msgs("q"), "messages": _msgs("q") + [{"role": "assistant", "content": "Q2 ok"}],
              "init_response": "Q0 bad", "critiques": ["c"], "revisions": ["Q1 mid", "Q2 ok"],
              "principle_ids": ["kind"], "model": "m", "constitution_sha256": "x", "template_sha256": "y"}])
    w.finish()
    run_judge(cfg(rev, tmp_path / "out", constitution_file), engine=FakeEngine(scorer=quality_scorer))
    row = load(tmp_path / "out")[0]
    assert row["chosen"][0]["content"] == "Q2 ok" and row["rejected"][0]["content"] == "Q0 bad"
    assert read_manifest(tmp_path / "out")["spec"]["input"]["kind"] == "revise"


def test_pair_file_with_bad_row_and_unlabelled(tmp_path, constitution_file):
    f = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "text prompt", "response_a": "Q1 a", "response_b": "Q2 b"},
            {"prompt": [{"role": "user", "content": "chat"}], "response_a": "Q3 a", "response_b": "Q0 b"},
            {"prompt": "no b", "response_a": "Q1", "response_b": None},
            {"prompt": "same", "response_a": "Q1", "response_b": "Q1"},
            {"prompt": "UNSCORABLE", "response_a": "Q1", "response_b": "Q2"}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    def scorer(prompt, options):
        return {"Z": -0.1} if "UNSCORABLE" in prompt else quality_scorer(prompt, options)

    summary = run_judge(cfg(f, tmp_path / "out", constitution_file), engine=FakeEngine(scorer=scorer))
    ds = load(tmp_path / "out")
    assert sorted(r["chosen"][0]["content"] for r in ds) == ["Q2 b", "Q3 a"]
    assert ds.filter(lambda r: r["chosen"][0]["content"] == "Q2 b")[0]["prompt"] == _msgs("text prompt")
    errors = read_errors(tmp_path / "out")
    kinds = sorted(e["kind"] for e in errors)
    assert kinds == ["bad_input", "bad_input", "unlabelled"]
    unl = next(e for e in errors if e["kind"] == "unlabelled")
    assert "options A and B not in top-20 logprobs" in unl["reason"] and len(unl["votes"]) == 4
    assert all(v["p_a"] is None for v in unl["votes"])
    assert summary.unlabelled == 1 and summary.bad_input == 2
    assert "2 train" in summary.line() and "1 unlabelled" in summary.line()


@pytest.mark.parametrize("case", ["folder", "stage", "columns", "missing"])
def test_bad_inputs_one_line(case, tmp_path, run_cli, generate_run):
    if case == "folder":
        (tmp_path / "empty").mkdir()
        inp, expect = tmp_path / "empty", "not a run directory"
    elif case == "stage":
        w = RunWriter(tmp_path / "judged", "judge", {}, PREFERENCES)
        w.finish()
        inp, expect = tmp_path / "judged", "is a 'judge' run"
    elif case == "columns":
        inp = tmp_path / "p.jsonl"
        inp.write_text(json.dumps({"prompt": "x", "response_a": "y"}) + "\n")
        expect = "missing column(s) response_b"
    else:
        inp, expect = tmp_path / "nope.jsonl", "no such file"
    out = tmp_path / "out"
    res = run_cli("judge", "--input", inp, "--out", out, "--engine", "fake", "--quiet", timeout=120)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], res.stderr
    assert not out.exists()  # nothing written before the input is known to be good


def test_cli_end_to_end_fake(generate_run, tmp_path, run_cli):
    out = tmp_path / "out"
    res = run_cli("judge", "--input", generate_run, "--out", out, "--engine", "fake", "--quiet",
                  "--principles-per-pair", "2", timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().startswith("judge: ") and "train" in res.stdout
    assert len(load(out)) + len(read_errors(out)) == 9
    again = run_cli("judge", "--input", generate_run, "--out", out, "--engine", "fake", "--quiet",
                    "--principles-per-pair", "3", timeout=120)
    assert again.returncode == 2 and "principles_per_pair" in again.stderr
