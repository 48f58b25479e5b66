"""Both dtype paths on any machine: the judge's logits are float32 whatever the weights' dtype.

A bf16 lm_head rounds each logit to bf16: logits of magnitude 1 to 2 land on multiples of 2^-7,
those near 20 on multiples of 0.125, so every gap between two top-k logprobs sits on that grid
and the judge's soft labels collapse onto a handful of values. The vllm engine computes the head
in float32 through vLLM's ``head_dtype`` (generator/engines/vllm_engine.py), the transformers
engine with ``F.linear`` in float32 (generator/engines/hf_engine.py). ``resolve_dtype`` is covered
in tests/test_vllm_cpu.py.
"""

from __future__ import annotations

import pytest

from bench.dtype import BF16_STEP, on_grid_share, top_gaps

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
PROMPTS = ["Which response is less harmful?\n(A) I cannot help with that.\n(B) Sure, here is how.\nAnswer: (",
           "Short prompt",
           "A longer prompt, so that the batch is left-padded: which of these two replies is more honest "
           "and more helpful to the person asking? The answer is ("]


def test_transformers_bf16_scores_use_a_float32_head(tiny_model_dir):
    """bf16 weights: the engine's top-k logprobs equal a float64 head applied to the same bf16
    final hidden states (hidden_states[-1] of the same padded batch) within 1e-4, and differ from
    the bf16 logits the model itself returns. The final norm is scaled by 20 so that the logits
    reach ~20, where bf16 resolves only steps of 0.125 (as in real judge models)."""
    import torch

    from generator.engines.base import add_logprob
    from generator.engines.hf_engine import TransformersEngine

    engine = TransformersEngine(tiny_model_dir, dtype="bfloat16", batch_size=8)
    try:
        model = engine._model
        assert model.dtype == torch.bfloat16
        with torch.no_grad():
            model.base_model.norm.weight.mul_(20.0)
        top_k = 20
        scores = engine.score_choices(PROMPTS, ["A", "B"], top_k=top_k)

        ids, mask = engine._pad_left(engine._ids(PROMPTS))
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True)
        hidden = out.hidden_states[-1][:, -1, :].double()
        reference = torch.log_softmax(hidden @ model.get_output_embeddings().weight.double().T, dim=-1)
        bf16_logits = torch.log_softmax(out.logits[:, -1, :].float().double(), dim=-1)
        assert reference.exp().max() < 0.999  # the logits are large but not saturated
        assert hidden.abs().max() > 10 and (hidden @ model.get_output_embeddings().weight.double().T).abs().max() > 8
    finally:
        engine.close()

    for row, got in enumerate(scores):
        want: dict[str, float] = {}
        vals, idx = reference[row].topk(top_k)
        for v, i in zip(vals.tolist(), idx.tolist(), strict=True):
            add_logprob(want, engine._tok.decode([i]), v)
        assert got.top.keys() == want.keys()
        assert max(abs(got.top[t] - want[t]) for t in want) < 1e-4
    # The model's own bf16 logits are visibly off the float32 head (they would have been read before).
    assert (bf16_logits - reference).abs().max().item() > 1e-2
    gaps = [lp[0] - x for lp in (sorted(s.top.values(), reverse=True) for s in scores) for x in lp[1:]]
    assert on_grid_share(gaps) < 0.5


def test_on_grid_share_and_top_gaps_by_hand():
    """0.25 and 3/128 are on the 2^-7 grid, 0.3 is not (0.3 * 128 = 38.4)."""
    assert BF16_STEP == 2 ** -7
    assert on_grid_share([0.25, 3 / 128, 0.3, 1.0 + 1e-7]) == 0.75
    assert on_grid_share([]) is None
    assert top_gaps({"A": -0.5, "B": -1.0, " C": -2.25}) == [0.5, 1.75]
    assert top_gaps({"A": -0.5}) == []


@pytest.mark.integration
def test_vllm_bf16_judge_logits_are_float32(shared_data):
    """A vLLM engine forced to bfloat16 scores 8 judge prompts (4 pairs x 1 principle x 2 orders):
    the gaps between its top-k logprobs are mostly OFF bf16's 2^-7 grid (measured here: 147 of 152
    off with the float32 head, 0 of 152 off with hf_overrides={} i.e. a bf16 head), and every vote
    has a p_a strictly between 0 and 1. Its greedy answer to the France question is recorded."""
    from bench.judge import load_pairs
    from constitution import DEFAULT_PATH, load_constitution
    from generator.engines import Sampling, make_engine
    from judge.config import JudgeConfig
    from judge.scoring import judge_pairs

    pairs = load_pairs(shared_data / "hh-rlhf-harmless-base-test.jsonl.gz", 4)
    config = JudgeConfig(principles_per_pair=1, orders="both")
    engine = make_engine("vllm", "smollm2-135m", dtype="bfloat16")
    try:
        assert engine.dtype == "bfloat16"
        votes = [v for verdict in judge_pairs(engine, load_constitution(DEFAULT_PATH), pairs, config)
                 for v in verdict.votes]
        france = engine.generate([FRANCE], Sampling(n=1, temperature=0.0, max_tokens=24))[0][0].text
    finally:
        engine.close()
    assert len(votes) == 8
    p = [v.p_a for v in votes]
    assert all(x is not None and 0.0 < x < 1.0 for x in p), [v.reason for v in votes]
    gaps = [g for v in votes for g in top_gaps(v.raw)]
    assert len(gaps) >= 8 * 5
    assert on_grid_share(gaps) < 0.5  # a bf16 head puts every gap on the grid (share 1.0)
    # Distinct soft labels: with float32 logits the 8 votes do not collapse onto a few values.
    assert len({round(x, 4) for x in p}) >= 6
    print(f"bfloat16 greedy: {france!r}")
    assert france.strip()


@pytest.mark.integration
def test_vllm_float32_greedy_knows_the_capital_of_france(vllm_engine):
    """The session's float32 engine (the default on every CPU) answers with Paris."""
    from generator.engines import Sampling

    assert vllm_engine.dtype == "float32"
    text = vllm_engine.generate([FRANCE], Sampling(n=1, temperature=0.0, max_tokens=24))[0][0].text
    assert "Paris" in text
