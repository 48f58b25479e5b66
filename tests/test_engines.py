"""The three real engines on the embedded model (SmolLM2-135M-Instruct): vLLM in-process, a real
vLLM OpenAI server through the openai engine, and transformers. Same prompts, same checks.

Run the in-process and the server halves separately on a small box to keep one vLLM alive:
``pytest -m integration tests/test_engines.py -k "not openai"`` then ``-k openai``."""

from __future__ import annotations

import math

import pytest

from generator.engines import EngineError, Sampling, make_engine

pytestmark = pytest.mark.integration

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Name one primary color."}],
    [{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": "Say hello."}],
]
# The 135M model prefers (A) here by a clear margin (about 1.3 nats). On a CPU both vLLM and transformers
# compute in float32 from the same bf16 weights (generator/engines/vllm_cpu.py), so their option logprobs
# differ only by kernel rounding: 5e-5 nats measured on an AVX2-only EPYC.
CHOICE = ("Which response is more helpful?\n(A) I don't know.\n(B) Paris is the capital of France.\n"
          "The answer is: (")
CHOICE_SWAPPED = ("Which response is more helpful?\n(A) Paris is the capital of France.\n(B) I don't know.\n"
                 "The answer is: (")
GREEDY = Sampling(n=1, temperature=0.0, max_tokens=16, seed=0)
ENGINES = ["vllm", "openai", "transformers"]


@pytest.fixture(scope="module")
def hf_engine(embedded_model_dir):
    engine = make_engine("transformers", embedded_model_dir, batch_size=4)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def openai_engine(vllm_server):
    from generator.engines.openai_engine import OpenAIEngine

    engine = OpenAIEngine("smollm2-135m", base_urls=[vllm_server], deadline_s=120)
    yield engine
    engine.close()


@pytest.fixture(params=ENGINES)
def engine(request):
    return request.getfixturevalue({"vllm": "vllm_engine", "openai": "openai_engine",
                                    "transformers": "hf_engine"}[request.param])


def test_greedy_chat_generation_returns_text(engine):
    out = engine.generate(CHATS, GREEDY)
    assert len(out) == 3
    for samples in out:
        assert len(samples) == 1
        c = samples[0]
        assert c.text.strip(), out
        assert 1 <= c.num_tokens <= 16
        assert c.finish_reason in ("stop", "length")


def test_n_samples_each(engine):
    out = engine.generate(CHATS, Sampling(n=2, temperature=0.7, max_tokens=12, seed=1))
    assert [len(s) for s in out] == [2, 2, 2]
    assert all(c.num_tokens >= 1 for s in out for c in s)


def test_seed_changes_the_samples_and_the_same_seed_repeats_them(engine):
    """--seed must change the data: the same seed gives the same samples, another seed others."""
    sampling = lambda seed: Sampling(n=2, temperature=1.0, top_p=1.0, max_tokens=12, seed=seed)  # noqa: E731
    texts = lambda seed: [[c.text for c in s] for s in engine.generate(CHATS[:2], sampling(seed))]  # noqa: E731
    first, again, other = texts(1), texts(1), texts(2)
    assert first == again
    assert first != other


def test_stop_string_cuts_the_text(engine):
    out = engine.generate([CHATS[0]], Sampling(n=1, temperature=0.0, max_tokens=32, stop=(" ",)))
    text = out[0][0].text
    assert " " not in text and out[0][0].finish_reason == "stop", text


def test_choice_scores_are_finite_for_both_options(engine):
    scores = engine.score_choices([CHOICE, CHOICE_SWAPPED], ["A", "B"], top_k=20)
    for s in scores:
        assert s.logprobs["A"] is not None and s.logprobs["B"] is not None
        assert math.isfinite(s.logprobs["A"]) and math.isfinite(s.logprobs["B"])
        assert s.logprobs["A"] <= 0 and s.logprobs["B"] <= 0
        assert len(s.top) >= 10


def test_count_tokens_applies_the_chat_template(engine):
    n_chat, n_raw = engine.count_tokens(CHATS[0]), engine.count_tokens(CHATS[0][0]["content"])
    assert n_raw == 7  # "What is the capital of France?" in SmolLM2's tokenizer
    assert n_chat > n_raw + 10  # system prompt and role markers added by the template


def test_vllm_and_transformers_agree_on_the_choice(vllm_engine, hf_engine):
    v = vllm_engine.score_choices([CHOICE], ["A", "B"])[0].logprobs
    h = hf_engine.score_choices([CHOICE], ["A", "B"])[0].logprobs
    assert h["A"] - h["B"] > 0.5  # the gap the assertion relies on
    assert (v["A"] > v["B"]) == (h["A"] > h["B"])
    assert v["A"] == pytest.approx(h["A"], abs=2e-3) and v["B"] == pytest.approx(h["B"], abs=2e-3)


def test_vllm_and_transformers_greedy_text_and_counts_agree(vllm_engine, hf_engine):
    v, h = vllm_engine.generate(CHATS[:1], GREEDY)[0][0], hf_engine.generate(CHATS[:1], GREEDY)[0][0]
    assert vllm_engine.count_tokens(CHATS[0]) == hf_engine.count_tokens(CHATS[0])
    # bf16 vs fp32 may diverge late; the first words of a greedy answer agree.
    assert v.text.split()[:3] == h.text.split()[:3], (v.text, h.text)


def test_vllm_prefix_cache_is_on(vllm_engine):
    long_prompt = "Background: " + " ".join(f"fact {i} is true." for i in range(150)) + "\nThe answer is: ("
    before = vllm_engine.stats()["cached_prompt_tokens"]
    vllm_engine.score_choices([long_prompt], ["A", "B"])
    vllm_engine.score_choices([long_prompt], ["A", "B"])
    stats = vllm_engine.stats()
    assert stats["cached_prompt_tokens"] - before >= 128, stats
    assert 0 < stats["prefix_cache_hit_rate"] <= 1
    assert vllm_engine.max_context == 2048


def test_openai_engine_reads_the_server(openai_engine, vllm_server, embedded_model_dir):
    from generator.engines.openai_engine import OpenAIEngine

    assert openai_engine.max_context == 2048
    assert openai_engine.model == "smollm2-135m"
    # A client may also send the folder path (the same model); the rows then name the embedded model.
    with OpenAIEngine(embedded_model_dir, base_urls=[vllm_server], deadline_s=120) as other:
        assert other.generate(CHATS[:1], GREEDY)[0][0].text.strip()
        assert other.count_tokens(CHATS[0]) == openai_engine.count_tokens(CHATS[0])
        assert other.model == "smollm2-135m"
    # A name the server does not serve is refused in one line naming what it serves (never silently
    # another model: the rows would name the wrong one).
    with OpenAIEngine("some-other-name", base_urls=[vllm_server], deadline_s=120) as other:
        with pytest.raises(EngineError, match="'some-other-name' is not served.*it serves: smollm2-135m"):
            other.generate(CHATS[:1], GREEDY)
