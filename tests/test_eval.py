"""``rlaif eval`` (evaluation/evaluate.py) on fake engines: the verdicts, the outputs, resuming, overwriting."""

from __future__ import annotations

import json
import math
import re

import pytest

from evaluation import winrate
from evaluation.evaluate import EvalConfig, EvalError, evaluate
from generator.engines.fake import FakeEngine
from generator.engines.options import EngineOptions
from judge.config import JudgeConfig
from plumbing.runs import RunError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GOOD = "zqxgood"
PROMPTS = ["q1 win", "q2 win", "q3 win", "q4 lose"]


def _last_text(prompt) -> str:
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


def _options(prompt: str) -> tuple[str, str]:
    """The texts shown as (A) and (B) in the last comparison of a judge prompt (prompts/judge/pairwise.jinja)."""
    a = prompt.rsplit("(A) <response>", 1)[1].split("</response>", 1)[0]
    b = prompt.rsplit("(B) <response>", 1)[1].split("</response>", 1)[0]
    return a, b


def oracle(prompt: str, options) -> dict:
    """Prefers the option holding GOOD with probability 0.9, whichever position it is in."""
    a, b = _options(prompt)
    p = 0.9 if GOOD in a else 0.1 if GOOD in b else 0.5
    return {"A": math.log(p), "B": math.log(1 - p)}


def policy_reply(prompt, k) -> str:
    return f"{GOOD} policy says more" if "win" in _last_text(prompt) else "policy"


def reference_reply(prompt, k) -> str:
    return f"{GOOD} reference" if "lose" in _last_text(prompt) else "ref"


def engines(**replies) -> dict:
    made = {"policy": FakeEngine("pol", replies=policy_reply), "reference": FakeEngine("ref", replies=reference_reply),
            "judge": FakeEngine("judge", scorer=oracle)}
    return made


def write_prompts(path, prompts=PROMPTS, answers=None):
    rows = [{"prompt": p, **({"answer": answers[i]} if answers else {})} for i, p in enumerate(prompts)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def config(tmp_path, **kw) -> EvalConfig:
    prompts = kw.pop("prompts", None) or write_prompts(tmp_path / "p.jsonl")
    return EvalConfig(prompts=prompts, out=kw.pop("out", tmp_path / "eval"),
                      policy=EngineOptions(model="pol", engine="fake"),
                      reference=EngineOptions(model="ref", engine="fake"),
                      judge=kw.pop("judge", None) or JudgeConfig(model="judge", engine="fake", principles_per_pair=2),
                      resamples=200, **kw)


def report_numbers_match_metrics(report: str, metrics: dict) -> int:
    """Every number in report.md above its settings is one of metrics.json's numbers as the report formats them
    (3 decimals, or an integer), or is quoted from one of its texts (a reason); returns how many were checked."""
    allowed: set[str] = set()

    def walk(x, key=None):
        if isinstance(x, bool):
            return
        if isinstance(x, str) and key == "reason":
            allowed.update(re.findall(r"-?\d+(?:\.\d+)?", x))
        elif isinstance(x, int):
            allowed.add(str(x))
        elif isinstance(x, float):
            allowed.add(f"{x:.3f}")
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(v, k)
        elif isinstance(x, list | tuple):
            for v in x:
                walk(v)

    walk(metrics)
    body = report.split("## Settings")[0]
    body = body.replace("95%", "").replace("arXiv 2404.04475", "")
    body = re.sub(r"\([^()]*\.png\)|!\[[^\]]*\]", "", body)  # image links
    body = re.sub(r"`[^`]*`", "", body)  # model names
    numbers = re.findall(r"(?<![\w.-])-?\d+(?:\.\d+)?(?![\w.])", body)
    unknown = [n for n in numbers if n not in allowed]
    assert not unknown, f"numbers in report.md not in metrics.json: {unknown}"
    return len(numbers)


def test_eval_win_rate_from_soft_votes_in_both_orders(tmp_path):
    cfg = config(tmp_path)
    made = engines()
    m = evaluate(cfg, engines=made)
    # the oracle gives the policy 0.9 on the three "win" prompts in both orders and 0.1 on the "lose" one
    assert m["win_rate"]["value"] == pytest.approx((0.9 * 3 + 0.1) / 4)
    assert (m["win_rate"]["wins"], m["win_rate"]["losses"], m["win_rate"]["ties"]) == (3, 1, 0)
    assert m["position_consistency"]["value"] == 1.0
    delta = [len(f"{GOOD} policy says more") - len("ref")] * 3 + [len("policy") - len(f"{GOOD} reference")]
    p = [0.9, 0.9, 0.9, 0.1]
    lc = winrate.length_controlled(p, delta)
    assert m["length_controlled_win_rate"]["value"] == pytest.approx(lc["value"])
    assert m["length"]["mean_difference"] == pytest.approx(sum(delta) / 4)
    assert m["length"]["correlation"]["pearson"] == pytest.approx(1.0)
    from plumbing.runs import load

    rows = list(load(cfg.out))
    for pid, pp in m["per_principle"].items():  # each principle's votes say what the pair's do
        own = [0.9 if "win" in r["prompt"][-1]["content"] else 0.1 for r in rows if pid in r["principle_ids"]]
        assert pp["n"] == len(own) and pp["value"] == pytest.approx(sum(own) / len(own))
    assert m["accuracy"] is None and m["errors"] == 0
    out = cfg.out
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(m))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "eval" and manifest["status"] == "complete"
    assert manifest["summary"]["value"] == pytest.approx(0.7)
    assert (out / "win_rate_per_principle.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "verdict_vs_length.png").read_bytes()[:8] == PNG_MAGIC
    report = (out / "report.md").read_text()
    assert "| win-rate of the policy | 0.700 |" in report
    assert report_numbers_match_metrics(report, m) > 20
    # each pair: 2 principle draws (1 or 2 distinct) x 2 orders
    assert 4 * 2 <= made["judge"].calls["score"] <= 4 * 2 * 2


def test_eval_resumes_without_regenerating_and_refuses_a_changed_spec(tmp_path):
    made = engines()
    evaluate(config(tmp_path, limit=2), engines=made)
    assert made["policy"].calls["generate"] == 2
    m = evaluate(config(tmp_path, limit=4), engines=made)  # 2 more prompts: only they are generated
    assert (made["policy"].calls["generate"], made["reference"].calls["generate"]) == (4, 4)
    assert m["n_prompts"] == 4 and m["win_rate"]["value"] == pytest.approx(0.7)
    evaluate(config(tmp_path, limit=4), engines=made)  # complete: nothing to do
    assert made["policy"].calls["generate"] == 4
    with pytest.raises(RunError, match="different spec"):
        evaluate(config(tmp_path, limit=4, max_tokens=7), engines=made)
    m = evaluate(config(tmp_path, limit=4, max_tokens=7, overwrite=True), engines=made)
    assert made["policy"].calls["generate"] == 8 and m["n_prompts"] == 4  # the old responses were dropped


def test_eval_builds_engines_per_model_and_uses_a_shared_one(tmp_path, monkeypatch):
    shared = FakeEngine("judge", scorer=oracle)
    cfg = config(tmp_path)
    cfg = cfg.model_copy(update={"policy": EngineOptions(model="judge", engine="fake"),
                                 "reference": EngineOptions(model="judge", engine="fake")})
    monkeypatch.setenv("RLAIF_NO_MODEL", "1")  # building any engine would raise
    m = evaluate(cfg, engine=shared)
    assert m["identical_responses"] == 4
    assert m["win_rate"]["value"] == pytest.approx(0.5) and m["win_rate"]["ties"] == 4
    assert m["length_controlled_win_rate"]["value"] == pytest.approx(0.5)
    assert shared.calls["generate"] == 8


def test_eval_accuracy_with_gsm8k_answers(tmp_path):
    prompts = write_prompts(tmp_path / "g.jsonl", ["What is 2 + 2? win", "What is 3 + 3? win"],
                            answers=["2 + 2 = 4\n#### 4", "#### 6"])
    made = engines()
    made["policy"].replies = lambda p, k: "It is 4." if "2 + 2" in _last_text(p) else "It is 5."
    made["reference"].replies = lambda p, k: "#### 4" if "2 + 2" in _last_text(p) else "#### 6"
    m = evaluate(config(tmp_path, prompts=prompts), engines=made)
    acc = m["accuracy"]
    assert acc["reward"] == "gsm8k" and acc["n"] == 2
    assert (acc["policy"]["k"], acc["policy"]["n"]) == (1, 2)
    assert (acc["reference"]["k"], acc["reference"]["n"]) == (2, 2)
    assert acc["policy"]["statuses"] == {"correct": 1, "wrong": 1}


def test_eval_refuses_before_touching_anything(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(RunError, match="not an rlaif run directory"):
        evaluate(config(tmp_path, out=tmp_path / "mine", overwrite=True), engines=engines())
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    with pytest.raises(EvalError, match="no such file"):
        evaluate(config(tmp_path, prompts=tmp_path / "nope.jsonl"), engines=engines())
    assert not (tmp_path / "eval").exists()
    with pytest.raises(ValueError, match="without config.json"):
        EvalConfig(prompts=tmp_path / "p.jsonl", out=tmp_path / "e", policy=EngineOptions(model=str(tmp_path / "mine")),
                   reference=EngineOptions(model="smollm2-135m"))


def test_eval_cli_prints_the_win_rate_line(tmp_path):
    from typer.testing import CliRunner

    from rlaif.cli import app

    prompts = write_prompts(tmp_path / "p.jsonl")
    out = tmp_path / "eval"
    res = CliRunner().invoke(app, ["eval", "--policy", "fake-model", "--reference", "fake-model", "--judge-model",
                                   "fake-model", "--engine", "fake", "--prompts", str(prompts), "--out", str(out),
                                   "--max-tokens", "8", "--principles", "2", "--quiet"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    m = json.loads((out / "metrics.json").read_text())
    # one fake model for both: identical replies, and the same judge prompt in both orders -> exactly 0.5
    assert m["identical_responses"] == 4 and m["win_rate"]["value"] == pytest.approx(0.5, abs=1e-12)
    assert "win-rate 0.500 [0.500, 0.500] over 4 prompts (0 won, 0 lost, 4 tied" in res.output


def test_eval_reads_prompts_and_answers_from_a_gsm8k_run(tmp_path):
    from datasets import Features, Value

    from generator.records import MESSAGES
    from plumbing.runs import RunWriter

    data = tmp_path / "gsm8k"
    rows = [{"id": f"g{i}", "prompt": [{"role": "user", "content": f"What is {i} + {i}? win"}],
             "answer": f"#### {2 * i}"} for i in range(1, 4)]
    writer = RunWriter(data, "data-gsm8k", {"toy": 1},
                       Features({"id": Value("string"), "prompt": MESSAGES, "answer": Value("string")}))
    writer.write(rows)
    writer.finish()
    made = engines()
    made["policy"].replies = lambda p, k: "#### 2" if "1 + 1" in _last_text(p) else "#### 0"
    m = evaluate(config(tmp_path, prompts=data, limit=2), engines=made)
    assert m["n_prompts"] == 2 and m["settings"]["prompts_sha256"] == writer.spec_sha256
    assert (m["accuracy"]["reward"], m["accuracy"]["policy"]["k"], m["accuracy"]["policy"]["n"]) == ("gsm8k", 1, 2)


def test_eval_killed_mid_run_resumes_to_the_uninterrupted_result(tmp_path):
    """SIGKILL while the reference is generating (the fake engine slowed down): every file left is whole, and
    the re-run's rows and win-rate equal those of a run never killed."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import BASE_ENV
    from test_crash import assert_readable

    from plumbing.runs import load

    prompts = write_prompts(tmp_path / "p.jsonl", [f"question {i} win" for i in range(8)])

    def argv(out):
        return [sys.executable, "-m", "rlaif", "eval", "--policy", "fake-model", "--reference", "fake-model",
                "--judge-model", "fake-model", "--engine", "fake", "--prompts", str(prompts), "--out", str(out),
                "--batch-size", "2", "--principles", "2", "--quiet"]

    killed, whole = tmp_path / "killed", tmp_path / "whole"
    proc = subprocess.Popen(argv(killed), env={**BASE_ENV, "RLAIF_FAKE_DELAY_S": "0.3"}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "responses" / "reference-00000.jsonl").exists() and time.time() < deadline:
        assert proc.poll() is None, "the eval ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert assert_readable(killed) >= 2
    assert json.loads((killed / "manifest.json").read_text())["status"] == "running"
    policy = {f.name: f.read_bytes() for f in (killed / "responses").glob("policy-*.jsonl")}
    assert len(policy) == 4  # 8 prompts in batches of 2, all generated before the kill
    for out in (killed, whole):
        res = subprocess.run(argv(out), env=BASE_ENV, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
    rows = {name: sorted(load(out), key=lambda r: r["id"]) for name, out in (("killed", killed), ("whole", whole))}
    assert len(rows["killed"]) == 8 and rows["killed"] == rows["whole"]
    # the resumed run generated no policy response again: the same batch files, byte for byte
    assert {f.name: f.read_bytes() for f in (killed / "responses").glob("policy-*.jsonl")} == policy
    m = [json.loads((out / "metrics.json").read_text()) for out in (killed, whole)]
    assert m[0]["win_rate"] == m[1]["win_rate"]


def test_eval_holds_one_engine_at_a_time_where_the_models_allow():
    """Policy served like the judge, reference another model: the reference is generated first and its
    engine closed before the policy's (which then judges) is built."""
    from evaluation.evaluate import RoleEngines

    options = {"policy": EngineOptions(model="base", engine="fake"), "reference": EngineOptions(model="sft", engine="fake"),
               "judge": EngineOptions(model="base", engine="fake")}
    pool = RoleEngines(options, {}, seed=0)
    assert pool.phase_order() == ("reference", "policy", "judge")
    events = []
    for n, role in enumerate(pool.phase_order()):
        engine = pool.get(role)
        events.append((role, engine.model, len(pool.pool.engines)))
        pool.release(pool.phase_order()[n + 1:])
    assert events == [("reference", "sft", 1), ("policy", "base", 1), ("judge", "base", 1)]
    assert not pool.pool.engines  # the last release closed the policy's engine, which judged
    options["policy"] = EngineOptions(model="sft", engine="fake")
    assert RoleEngines(options, {}, seed=0).phase_order() == ("policy", "reference", "judge")


def _eval_with_calibration(tmp_path, name, wins, losses, scorer, judge_batch=64) -> tuple[dict, list[dict]]:
    from plumbing.runs import load

    prompts = write_prompts(tmp_path / f"{name}.jsonl", [f"q{i} win" for i in range(wins)] +
                            [f"q{i} lose" for i in range(losses)])
    made = {**engines(), "judge": FakeEngine("judge", scorer=scorer)}
    results = {}
    for mode in ("none", "batch"):
        cfg = config(tmp_path, prompts=prompts, out=tmp_path / f"{name}-{mode}", seed=3, judge=JudgeConfig(
            model="judge", engine="fake", principles_per_pair=4, calibrate=mode, batch_size=judge_batch))
        results[mode] = evaluate(cfg, engines=made)
    return results, list(load(tmp_path / f"{name}-batch"))


def biased_oracle(prompt: str, options) -> dict:
    """``oracle`` with a position bias: +1 on the log-odds of (A), whatever it shows."""
    p = math.exp(oracle(prompt, options)["A"])
    return {"A": math.log(winrate.sigmoid(math.log(p / (1 - p)) + 1.0)),
            "B": math.log(1 - winrate.sigmoid(math.log(p / (1 - p)) + 1.0))}


def test_eval_calibration_keeps_an_unbiased_judges_win_rate(tmp_path):
    """An unbiased judge (0.9 for the better response in either position) and a policy better on 12 of 16
    prompts: win-rate 0.7 as read, and still 0.7 batch-calibrated (0.580 when the policy was always (A) in
    order "ab" and the prior was the mean log-odds per order); on 18 of 20, 0.82 and 0.82 (then 0.551).
    The policy is the pair's first response on a seeded coin per prompt, recorded per row; each row is seen
    from the policy's side. With a position bias (+1 log-odds to (A)) calibration moves the win-rate toward
    the unbiased judge's: 0.682 as read, 0.693 calibrated (then 0.580). The judge's batch size changes
    nothing."""
    for name, wins, losses, value in (("w12", 12, 4, 0.7), ("w18", 18, 2, 0.82)):
        results, rows = _eval_with_calibration(tmp_path, name, wins, losses, oracle)
        assert results["none"]["win_rate"]["value"] == pytest.approx(value)
        assert results["batch"]["win_rate"]["value"] == pytest.approx(value)
        assert results["batch"]["win_rate"]["wins"] == wins
        cal = results["batch"]["calibration"]
        assert cal["applied"] and cal["p_a"] == pytest.approx(0.5) and cal["votes"] >= 32
        assert results["none"]["calibration"] is None
        assert 0 < results["batch"]["policy_first"] == sum(r["policy_first"] for r in rows) < len(rows)
        assert all(r["p_policy"] == pytest.approx(0.9 if "win" in r["prompt"][-1]["content"] else 0.1) for r in rows)
        report = (tmp_path / f"{name}-batch" / "report.md").read_text()
        assert "calibration: batch: each P(A) divided by the run's prior P(A) = 0.500" in report
    results, rows = _eval_with_calibration(tmp_path, "biased", 12, 4, biased_oracle)
    assert results["none"]["win_rate"]["value"] == pytest.approx(0.682, abs=1e-3)
    assert results["batch"]["win_rate"]["value"] == pytest.approx(0.693, abs=1e-3)
    (tmp_path / "small").mkdir()
    again, rows_again = _eval_with_calibration(tmp_path / "small", "biased", 12, 4, biased_oracle, judge_batch=3)
    assert again["batch"]["win_rate"] == results["batch"]["win_rate"]
    assert sorted(rows_again, key=lambda r: r["id"]) == sorted(rows, key=lambda r: r["id"])
