"""The judge on real vLLM (embedded model) -> a preference run that TRL's trainers accept unchanged."""

from __future__ import annotations

import gzip
import math

import pytest

from generator.engines.options import EngineOptions
from generator.generate import GenerateConfig, run_generate
from judge.build import run_judge
from judge.config import JudgeConfig
from judge.records import PREFERENCES
from rlaif.runs import load, read_errors, read_manifest

# vLLM start-up on a shared 2-core box can take minutes; the default 900 s covers setup + test.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def judged(tmp_path_factory, shared_data, vllm_engine):
    """16 HH-RLHF prompts -> `generate` (2 responses each, real vLLM) -> `judge` (2 principles x 2 orders)."""
    tmp = tmp_path_factory.mktemp("judge-int")
    prompts = tmp / "hh-16.jsonl"
    with gzip.open(shared_data / "hh-rlhf-harmless-base-test.jsonl.gz", "rt") as f:
        prompts.write_text("".join(line for _, line in zip(range(16), f, strict=False)))
    gen = tmp / "gen"
    run_generate(GenerateConfig(prompts=prompts, out=gen, n=2, max_tokens=32,
                                engine=EngineOptions(engine="vllm", batch_size=16)), engine=vllm_engine)
    before = vllm_engine.stats()
    out = tmp / "prefs"
    summary = run_judge(JudgeConfig(input=str(gen), out=str(out), engine="vllm", principles_per_pair=2,
                                    batch_size=16), engine=vllm_engine)
    return out, summary, before, vllm_engine.stats()


def _ensemble_by_hand(row: dict) -> float:
    """p_chosen from the row's own votes (judge/scoring.py's rule, recomputed here): per principle the mean
    over its scored orders of P(chosen wins) (p_a in order "ab", where chosen is shown as (A); 1 - p_a in
    "ba"), then the plain mean over the principle draws, a principle drawn twice counting twice."""
    per_principle = {}
    for pid in set(row["principle_ids"]):
        ps = [v["p_a"] if v["order"] == "ab" else 1 - v["p_a"] for v in row["votes"]
              if v["principle_id"] == pid and v["p_a"] is not None]
        if ps:
            per_principle[pid] = sum(ps) / len(ps)
    draws = [per_principle[pid] for pid in row["principle_ids"] if pid in per_principle]
    return sum(draws) / len(draws)


def test_judge_rows_are_real_soft_labels(judged):
    out, summary, before, after = judged
    ds = load(out)
    assert ds.features == PREFERENCES
    assert read_manifest(out)["status"] == "complete"
    errors = read_errors(out)
    assert len(ds) + len(errors) == 16
    assert len(ds) >= 12, errors  # SmolLM2 puts "A"/"B" in its top-20 on nearly every prompt
    votes = [v for row in ds for v in row["votes"]]
    scored = [v["p_a"] for v in votes if v["p_a"] is not None]
    assert len(scored) >= 0.9 * len(votes)
    # real soft labels, not canned: bf16 logits make p_a take few distinct values, but more than a handful
    assert all(0.0 < p < 1.0 for p in scored) and len({round(p, 4) for p in scored}) >= 4
    for row in ds:
        assert 0.5 <= row["p_chosen"] <= 1.0
        assert row["chosen"][0]["role"] == "assistant" and row["chosen"] != row["rejected"]
        # 2 principle draws (repeats allowed), each distinct principle judged in both orders
        assert len(row["principle_ids"]) == 2 and len(row["votes"]) == 2 * len(set(row["principle_ids"]))
        assert row["p_chosen"] == pytest.approx(_ensemble_by_hand(row), abs=1e-12)
    # judge prompts share the few-shot block and each pair's conversation: vLLM's prefix cache must hit
    cached = after["cached_prompt_tokens"] - before["cached_prompt_tokens"]
    total = after["prompt_tokens"] - before["prompt_tokens"]
    assert total > 0 and cached / total > 0.3, (cached, total)
    assert summary.line().startswith("judge: ")


def _trl_args(cls, out, **kw):
    return cls(output_dir=str(out), max_steps=1, per_device_train_batch_size=2, gradient_accumulation_steps=1,
               report_to=[], use_cpu=True, save_strategy="no", logging_steps=1, max_length=512, bf16=False, **kw)


def test_dpo_trainer_accepts_the_run(judged, tiny_model_dir, tmp_path):
    from trl import DPOConfig, DPOTrainer

    out, *_ = judged
    trainer = DPOTrainer(model=tiny_model_dir, args=_trl_args(DPOConfig, tmp_path / "dpo"), train_dataset=load(out))
    result = trainer.train()
    assert result.global_step == 1 and math.isfinite(result.training_loss)


def test_reward_trainer_accepts_the_run(judged, tiny_model_dir, tmp_path):
    from trl import RewardConfig, RewardTrainer

    out, *_ = judged
    trainer = RewardTrainer(model=tiny_model_dir, args=_trl_args(RewardConfig, tmp_path / "rm"),
                            train_dataset=load(out))
    result = trainer.train()
    assert result.global_step == 1 and math.isfinite(result.training_loss)
