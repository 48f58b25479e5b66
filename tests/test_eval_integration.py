"""``rlaif eval`` through the CLI on the embedded model, on the session's vLLM engine (tests/conftest.py).

The command line runs in-process (typer's CliRunner) with ``--engine`` naming ``SessionEngine``, a thin
``EngineBase`` subclass that hands every call to the session's in-process vLLM engine, so the test costs
generation and judging only, not a second vLLM start. The same model as policy and reference under greedy
decoding gives identical responses, and the judge sees the same prompt in both orders: the soft verdict is
p_a in one order and 1 - p_a in the other, so the win-rate is 0.5 up to float rounding.
"""

from __future__ import annotations

import gzip
import json

import pytest
from test_eval import report_numbers_match_metrics

from generator.engines.base import EngineBase

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]


class SessionEngine(EngineBase):
    """The session's vLLM engine under the ``--engine module:Class`` contract; closing it is a no-op."""

    engine = None  # set by the test
    name = "vllm"

    def __init__(self, model=None, **_):
        self.model, self.max_context = self.engine.model, self.engine.max_context

    def generate(self, prompts, sampling):
        return self.engine.generate(prompts, sampling)

    def score_choices(self, prompts, options, top_k=20):
        return self.engine.score_choices(prompts, options, top_k)

    def count_tokens(self, prompt):
        return self.engine.count_tokens(prompt)

    def close(self):
        return None


def _short_prompts(path, n: int) -> list[dict]:
    from plumbing.inputs import hh_split

    out = []
    with gzip.open(path, "rt") as f:
        for line in f:
            conversation, _ = hh_split(json.loads(line)["chosen"])
            if len(conversation) == 1 and len(conversation[0]["content"]) < 120:
                out.append({"prompt": conversation[0]["content"]})
            if len(out) == n:
                return out
    raise AssertionError("not enough short prompts")


def test_eval_cli_same_model_greedy_is_a_tie(vllm_engine, shared_data, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rlaif.cli import app

    monkeypatch.setattr(SessionEngine, "engine", vllm_engine)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in
                               _short_prompts(shared_data / "hh-rlhf-harmless-base-test.jsonl.gz", 2)))
    out = tmp_path / "eval"
    before = vllm_engine.stats()
    res = CliRunner().invoke(app, ["eval", "--policy", "smollm2-135m", "--reference", "smollm2-135m", "--engine",
                                   f"{__name__}:SessionEngine", "--prompts", str(prompts), "--out", str(out),
                                   "--max-tokens", "16", "--principles", "1", "--quiet"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_prompts"] == 2 and m["identical_responses"] == 2 and m["errors"] == 0
    w = m["win_rate"]
    assert w["unscored"] == 0 and w["value"] == pytest.approx(0.5, abs=1e-3)
    assert m["length_controlled_win_rate"]["value"] == pytest.approx(w["value"], abs=1e-9)  # every d is 0
    assert m["settings"]["policy"] == m["settings"]["reference"] == m["settings"]["judge"] == "smollm2-135m"
    after = vllm_engine.stats()
    assert after["requests"] > before["requests"]  # the session engine did the work
    report = (out / "report.md").read_text()
    assert report_numbers_match_metrics(report, m) > 15
    assert f"| win-rate of the policy | {w['value']:.3f} |" in report
    rows = [json.loads(line) for line in (out / "responses" / "policy-00000.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["text"].strip() for r in rows)
