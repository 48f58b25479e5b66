"""The benches' bookkeeping on canned numbers (the real runs need vLLM and minutes of CPU)."""

from __future__ import annotations

import pytest
from scipy import stats

from bench import generate as bench_generate
from bench.dtype import common_prefix, compare, dtype_pass
from bench.generate import cpu_model, machine_info, other_dtype
from bench.judge import other_dtype_figures
from generator.engines.fake import FakeEngine


@pytest.fixture
def const():
    from constitution import DEFAULT_PATH, load_constitution

    return load_constitution(DEFAULT_PATH)


def _run(texts, p_a, tok_s=10.0, gaps=()):
    return {"dtype": "x", "tok_s": tok_s, "tokens": 100, "seconds": 1.0, "tok_per_cpu_s": 5.0, "judge_per_s": 2.0,
            "texts": texts, "p_a": p_a, "gaps": list(gaps), "france": "Paris."}


def test_compare_by_hand():
    """Texts: one identical of two; common prefixes 2 ('a b' of 'a b c' / 'a b d') and 2 -> mean 2.0.
    p_a: the None vote is left out; |diffs| 0.1, 0.2, 0.1 -> 0.1333; 0.6 -> 0.4 flips: 1 of 3."""
    ref = _run(["a b c", "x y"], [0.2, 0.6, 0.9, None], tok_s=20.0, gaps=[0.25, 0.3])
    other = _run(["a b d", "x y"], [0.3, 0.4, 0.8, 0.5], tok_s=5.0, gaps=[0.125, 0.5])
    out = compare(ref, other, str.split)
    assert out["speed_ratio"] == 0.25
    assert out["greedy_identical_share"] == 0.5 and out["greedy_mean_common_prefix_tokens"] == 2.0
    assert out["greedy_mean_tokens_ref"] == 2.5
    assert out["votes"] == 4 and out["votes_compared"] == 3
    assert out["p_a_mean_abs_diff"] == pytest.approx(0.1333, abs=1e-4)
    assert out["preference_flip_share"] == pytest.approx(0.3333, abs=1e-4)
    assert out["p_a_pearson"] == round(stats.pearsonr([0.2, 0.6, 0.9], [0.3, 0.4, 0.8]).statistic, 4)
    assert out["p_a_spearman"] == 1.0  # same ranks
    assert out["ref"]["distinct_p_a"] == 3 and out["ref"]["unscored_votes"] == 1
    assert out["ref"]["top_gaps_on_bf16_grid"] == 0.5 and out["other"]["top_gaps_on_bf16_grid"] == 1.0
    assert common_prefix([1, 2, 3], [1, 2]) == 2 and common_prefix([], [1]) == 0


def test_compare_constant_p_a_has_no_correlation():
    out = compare(_run(["a"], [0.5, 0.5, 0.5]), _run(["a"], [0.2, 0.3, 0.4]), str.split)
    assert out["p_a_pearson"] is None and out["p_a_spearman"] is None


def test_dtype_pass_on_the_fake_engine(const, shared_data):
    from bench.generate import load_prompts
    from bench.judge import DEFAULT_DATA, load_pairs
    from judge.config import JudgeConfig

    engine = FakeEngine(scorer=lambda p, o: {"A": -1.0, "B": -2.0, "C": -2.3})
    pairs = load_pairs(DEFAULT_DATA, 3)
    run = dtype_pass(engine, load_prompts(DEFAULT_DATA, 5), const, pairs[2:], pairs[:2], JudgeConfig(
        principles_per_pair=1), max_tokens=8)
    assert len(run["texts"]) == 5 and run["tokens"] > 0 and run["tok_s"] > 0
    assert len(run["p_a"]) == 4 and all(p == pytest.approx(0.7311, abs=1e-4) for p in run["p_a"])  # sigmoid(1)
    assert run["gaps"] == pytest.approx([1.0, 1.3] * 4)


def test_generate_bench_compares_engines_at_one_dtype(monkeypatch, tmp_path):
    """vLLM and transformers run at the same dtype; the other dtype is a separate vLLM pass whose
    figure is reported beside the ratio, not in it."""
    calls = []

    def fake_time_engine(name, model, prompts, sampling, **kw):
        calls.append((name, kw.get("dtype")))
        tok_s = {"vllm": 100.0, "transformers": 50.0}[name] if kw["dtype"] == "float32" else 7.0
        return {"dtype": kw["dtype"], "tok_s": tok_s, "tok_per_cpu_s": tok_s / 2}

    monkeypatch.setattr(bench_generate, "time_engine", fake_time_engine)
    monkeypatch.setattr(bench_generate, "load_prompts", lambda path, n: [[{"role": "user", "content": "hi"}]] * n)
    out = bench_generate.bench_generate(prompts=2, data=tmp_path / "x.jsonl", vllm_dtype="float32")
    assert calls == [("vllm", "float32"), ("transformers", "float32"), ("vllm", "bfloat16")]
    assert out["speedup"] == 2.0 and out["vllm_tok_s"] == 100.0 and out["transformers_tok_s"] == 50.0
    assert out["vllm_dtype"] == out["transformers_dtype"] == "float32"
    assert out["vllm_other_dtype_tok_s"] == 7.0 and out["vllm_other_dtype"]["dtype"] == "bfloat16"
    assert {"cpu_model", "cpu_flags", "native_bf16"} <= out["machine"].keys()
    calls.clear()
    out = bench_generate.bench_generate(prompts=2, data=tmp_path / "x.jsonl", vllm_dtype="float32",
                                        with_other_dtype=False)
    assert len(calls) == 2 and out["vllm_other_dtype"] is None


def test_other_dtype_figures_by_hand():
    """p_a (a) [0.2, 0.7, None], other [0.25, 0.45, 0.5]: |diffs| 0.05, 0.25 -> 0.15; 0.7 -> 0.45 flips."""
    out = other_dtype_figures("bfloat16", 2.0, [0.2, 0.7, None], [0.25, 0.45, 0.5])
    assert out == {"dtype": "bfloat16", "per_s": 1.5, "seconds": 2.0, "unscored": 0, "distinct_p_a": 3,
                   "mean_abs_diff_p_a": 0.15, "preference_flip_share": 0.5}
    assert other_dtype("float32") == "bfloat16" and other_dtype("bfloat16") == "float32"


def test_machine_info_names_the_cpu(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: avx2\n")
    assert cpu_model(str(info)) == "AMD EPYC 9R14"
    assert cpu_model(str(tmp_path / "missing"))  # falls back to the platform's name
    m = machine_info()
    assert set(m["cpu_flags"]) <= set(bench_generate.ISA_FLAGS) and isinstance(m["native_bf16"], bool)


def test_bench_all_runs_the_grpo_bench_and_writes_its_table(embedded_model_dir, tmp_path):
    """``rlaif bench all --only grpo --quick`` (bench grpo in a process of its own, on the embedded model):
    per-step seconds and sandbox programs/s serial and parallel, every sandboxed program having passed
    (the bench refuses a result otherwise), in results.json and results.md."""
    import json
    import subprocess
    import sys

    from conftest import BASE_ENV

    out = tmp_path / "bench"
    res = subprocess.run([sys.executable, "-m", "rlaif", "bench", "all", "--only", "grpo", "--quick", "--json",
                          "--out", str(out)], capture_output=True, text=True, timeout=900, env=BASE_ENV)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout)
    assert summary == json.loads((out / "results.json").read_text()) and list(summary["benches"]) == ["grpo"]
    g = summary["benches"]["grpo"]["result"]
    assert g["grpo"]["steps"] == 2 and len(g["grpo"]["step_s"]) == 2 and g["seconds_per_step"] > 0
    assert len(g["grpo"]["reward_gsm8k_per_step"]) == 2
    sandbox = g["sandbox"]
    assert sandbox["programs"] == 4 and sandbox["programs_per_s_serial"] > 0 and sandbox["programs_per_s_parallel"] > 0
    assert sandbox["parallel_speedup"] == round(sandbox["programs_per_s_parallel"] / sandbox["programs_per_s_serial"], 3)
    assert g["machine"]["cpu_flags"] is not None
    table = (out / "results.md").read_text()
    assert f"seconds_per_step {g['seconds_per_step']:.4g}" in table and "| grpo |" in table


def test_service_bench_percentiles_and_recipe(tmp_path):
    """Nearest rank: of 1..100 ms the p50 is the 50th value and the p99 the 99th; of three values the p50 is the
    2nd and the p99 the 3rd. The bench's fake-engine recipe is one `rlaif run` accepts."""
    from bench.service import PROMPTS, fake_recipe, percentiles
    from pipeline.recipe import load_pipeline

    assert percentiles([i / 1000 for i in range(100, 0, -1)]) == {"n": 100, "p50_ms": 50.0, "p99_ms": 99.0,
                                                                  "max_ms": 100.0}
    assert percentiles([0.003, 0.001, 0.002]) == {"n": 3, "p50_ms": 2.0, "p99_ms": 3.0, "max_ms": 3.0}
    (tmp_path / "p.jsonl").write_text(PROMPTS)
    (tmp_path / "r.yaml").write_text(fake_recipe("b", tmp_path / "p.jsonl"))
    recipe = load_pipeline(tmp_path / "r.yaml", [f"root={tmp_path / 'root'}"])
    assert recipe.stages == ["generate", "judge"] and recipe.engine.engine == "fake"
