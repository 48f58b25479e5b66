"""The judge's engine settings (judge/config.py: ``CPU_PREFIX_BLOCK``-token KV blocks for an in-process vLLM on a
CPU) reach the judge's engine on every route that judges: ``rlaif judge``, the pipeline's judge stage, ``rlaif
eval``'s judge, ``rlaif judge-eval`` and the GRPO judge reward. Every engine build is recorded; a ``vllm`` engine
is a FakeEngine serving the model named, on a machine that reports a CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generator.engines.fake import FakeEngine
from judge.prefix import CPU_PREFIX_BLOCK

JUDGE_CPU = {"block_size": CPU_PREFIX_BLOCK}
MODEL = "smollm2-135m"


@pytest.fixture
def builds(monkeypatch) -> list[tuple[str, str, dict]]:
    """(engine kind, model, build keyword arguments) of every engine built."""
    import generator.engines.options as options
    import generator.engines.vllm_cpu as vllm_cpu

    made: list[tuple[str, str, dict]] = []

    def make_engine(name, model=None, **kwargs):
        made.append((name, model, kwargs))
        return FakeEngine(model)

    monkeypatch.setattr(options, "make_engine", make_engine)
    monkeypatch.setattr(vllm_cpu, "on_cpu", lambda: True)
    return made


def _settings(builds, model: str = MODEL) -> list[dict]:
    """The judge settings each build of ``model`` got (the seed left out)."""
    return [{k: v for k, v in kwargs.items() if k != "seed"} for _, m, kwargs in builds if m == model]


def _invoke(*args):
    from typer.testing import CliRunner

    from rlaif.cli import app

    res = CliRunner().invoke(app, [*map(str, args)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res


def test_the_judge_settings_are_the_cpu_block_on_vllm_only(monkeypatch):
    import generator.engines.vllm_cpu as vllm_cpu
    from judge.config import JudgeConfig

    monkeypatch.setattr(vllm_cpu, "on_cpu", lambda: True)
    assert JudgeConfig(engine="vllm").engine_options().engine_kwargs() == JUDGE_CPU
    assert JudgeConfig(engine="fake").engine_options().engine_kwargs() == {}
    assert JudgeConfig(base_urls=["http://127.0.0.1:1/v1"]).engine_options().engine_kwargs() == {}  # a server's own
    monkeypatch.setattr(vllm_cpu, "on_cpu", lambda: False)
    assert JudgeConfig(engine="vllm").engine_options().engine_kwargs() == {}  # a GPU keeps vLLM's default


def test_rlaif_judge(builds, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "hi", "response_a": "a", "response_b": "b"}) + "\n")
    _invoke("judge", "--input", pairs, "--out", tmp_path / "out", "--engine", "vllm", "--principles-per-pair", 1,
            "--quiet")
    assert [(kind, model) for kind, model, _ in builds] == [("vllm", MODEL)]
    assert _settings(builds) == [JUDGE_CPU]


def test_the_pipeline_judge_stage(builds, tmp_path):
    """generate and judge serve one model: the loop plans both uses, so ONE engine is built, with the judge's
    settings, and serves both stages (no rebuild between them)."""
    from pipeline.loop import run_pipeline
    from pipeline.recipe import PipelineRecipe

    (tmp_path / "p.jsonl").write_text('{"prompt": "Name a prime."}\n')
    recipe = PipelineRecipe.model_validate({
        "name": "t", "root": str(tmp_path / "root"), "prompts": str(tmp_path / "p.jsonl"), "model": MODEL,
        "stages": ["generate", "judge"], "engine": {"engine": "vllm"}, "generate": {"n": 2, "max_tokens": 8},
        "judge": {"engine": "vllm", "principles_per_pair": 1}})
    run_pipeline(recipe, say=lambda _: None)
    assert _settings(builds) == [JUDGE_CPU]  # one engine for generate and the judge
    assert json.loads((tmp_path / "root" / "judge" / "manifest.json").read_text())["status"] == "complete"


@pytest.mark.parametrize("judge_model", [MODEL, "org/judge"], ids=["judge-serves-the-policy", "judge-of-its-own"])
def test_rlaif_eval_judge(builds, tmp_path, judge_model):
    (tmp_path / "p.jsonl").write_text('{"prompt": "Name a prime."}\n{"prompt": "Say hi."}\n')
    _invoke("eval", "--policy", MODEL, "--reference", "org/reference", "--judge-model", judge_model, "--engine",
            "vllm", "--prompts", tmp_path / "p.jsonl", "--out", tmp_path / "eval", "--max-tokens", 8,
            "--principles", 1, "--quiet")
    assert _settings(builds, "org/reference") == [{}]
    assert _settings(builds, judge_model) == [JUDGE_CPU]  # built once: the policy generated on the judge's engine
    if judge_model != MODEL:
        assert _settings(builds, MODEL) == [{}]


def test_eval_uses_a_callers_pool(builds, tmp_path):
    """An engine the caller's pool holds with the judge's settings (the pipeline's judge stage) serves the eval's
    policy and judge without a new build; the eval closes the pool's engines when it is done."""
    from evaluation.evaluate import EvalConfig, evaluate
    from generator.engines.options import EngineOptions
    from generator.engines.pool import EnginePool
    from judge.config import JudgeConfig

    (tmp_path / "p.jsonl").write_text('{"prompt": "Name a prime."}\n')
    pool = EnginePool()
    held = pool.get(JudgeConfig(engine="vllm").engine_options())
    config = EvalConfig(prompts=tmp_path / "p.jsonl", out=tmp_path / "eval", max_tokens=8,
                        policy=EngineOptions(engine="vllm"), reference=EngineOptions(engine="vllm", model="org/ref"),
                        judge=JudgeConfig(engine="vllm", principles_per_pair=1))
    evaluate(config, pool=pool)
    assert _settings(builds) == [JUDGE_CPU] and _settings(builds, "org/ref") == [{}]
    assert not pool.engines and held.calls["generate"] == 1 and held.calls["score"] > 0


def test_rlaif_judge_eval(builds, tmp_path):
    human = tmp_path / "hh.jsonl"
    human.write_text("".join(json.dumps({"chosen": f"\n\nHuman: q{i}\n\nAssistant: good {i}",
                                         "rejected": f"\n\nHuman: q{i}\n\nAssistant: bad {i}"}) + "\n"
                             for i in range(3)))
    _invoke("judge-eval", "--human", human, "--out", tmp_path / "je", "--engine", "vllm", "--principles-per-pair", 1,
            "--quiet")
    assert _settings(builds) == [JUDGE_CPU]


def test_the_grpo_judge_reward(builds):
    from align.rewards.judge import JudgeReward, build_judge_reward

    reward = build_judge_reward(JudgeReward(engine="vllm", principles_per_pair=1))
    assert _settings(builds) == [JUDGE_CPU]
    assert len(reward(["Say hi."] * 2, ["hi", "hello"])) == 2


def test_the_judge_reward_shares_a_pool(builds):
    """A caller's pool (the job service's, a pipeline's) serves the reward's judge engine, with its settings."""
    from align.rewards.judge import JudgeReward, build_judge_reward
    from generator.engines.options import EngineOptions
    from generator.engines.pool import EnginePool

    pool = EnginePool()
    pool.get(EngineOptions(model=MODEL, engine="vllm"))
    build_judge_reward(JudgeReward(engine="vllm"), pool)
    assert _settings(builds) == [{}, JUDGE_CPU] and len(pool.engines) == 1
    pool.close()


def test_no_route_builds_the_judge_engine_itself():
    """Every judging route reaches the engine through JudgeConfig.engine_options (judge/config.py): no module
    outside it builds a vllm engine for a judge with make_engine."""
    root = Path(__file__).resolve().parents[1]
    offenders = [str(p.relative_to(root)) for folder in ("judge", "evaluation", "align", "pipeline", "rlaif")
                 for p in (root / folder).rglob("*.py") if 'make_engine("vllm"' in p.read_text()]
    assert offenders == []
