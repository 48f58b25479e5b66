"""``rlaif bench dtype``: bfloat16 against float32 on the in-process vLLM engine, on this machine.

The embedded model runs twice in one command, float32 first, each engine closed before the next
starts (memory, cores), each doing the same work:

1. **speed**: one greedy ``generate`` over the first human turns of ``prompts`` HH-RLHF rows
   (``max_tokens`` each), after an untimed warm-up; tokens/s counts the tokens really generated;
2. **greedy agreement with float32**: the share of prompts whose greedy text is identical, and
   the mean length of the common token prefix (texts re-tokenised with the model's tokenizer);
3. **judge agreement**: the same (pair, principle, order) comparisons scored by logprobs
   (judge/scoring.py, arXiv 2212.08073 sec 4.1): Pearson and Spearman correlation of p_a between
   the dtypes, the share of votes whose preferred option (p_a > 0.5) flips, and per dtype the
   number of distinct p_a values (at 4 decimals);
4. **are the logits float32?** per dtype, the share of gaps between the top-k logprobs of a
   vote that lie on bf16's grid (multiples of 2^-7, within 1 % of a step): a bf16 lm_head puts
   every gap of logits above 1 in magnitude there (share 1.0); float32 logits land there by chance
   (share ~0.02). The vllm engine asks vLLM for a float32 head whatever the weights' dtype.

The CPU (model, the ISA flags that decide vLLM's kernels, whether bf16 is native) is reported
with the figures: without native bf16 (``avx512_bf16``/``amx_bf16``, ``bf16`` on ARM) vLLM's
bf16 is a slow fallback, so the speed ratio speaks only for this kind of CPU; the quality
figures do not depend on it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import typer

log = logging.getLogger(__name__)

BF16_STEP = 2 ** -7  # spacing of bf16 numbers in [1, 2); larger bf16 numbers are multiples of it
GRID_TOL = 0.01      # a gap within 1 % of a step from a multiple of BF16_STEP counts as on the grid
DTYPES = ("float32", "bfloat16")
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def on_grid_share(gaps: list[float], step: float = BF16_STEP, tol: float = GRID_TOL) -> float | None:
    """Share of ``gaps`` within ``tol`` steps of a multiple of ``step`` (None for no gaps)."""
    if not gaps:
        return None
    return sum(abs(g / step - round(g / step)) <= tol for g in gaps) / len(gaps)


def top_gaps(top: dict[str, float]) -> list[float]:
    """Gaps between the best top-k logprob and each other one (logit differences: logZ cancels)."""
    lps = sorted(top.values(), reverse=True)
    return [lps[0] - x for x in lps[1:]]


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def dtype_pass(engine, chats: list, const, warm_pairs: list, pairs: list, config, max_tokens: int) -> dict:
    """Greedy generation (timed), the judge (timed) and the France answer on one engine."""
    from bench.generate import cpu_seconds
    from generator.engines import Sampling
    from judge.scoring import judge_pairs

    greedy = Sampling(n=1, temperature=0.0, top_p=1.0, max_tokens=max_tokens, seed=0)
    engine.generate(chats[:4], replace(greedy, max_tokens=8))  # warm-up: allocations, kernels
    judge_pairs(engine, const, warm_pairs, config)              # warm-up: the shared few-shot prefix
    c0, t0 = cpu_seconds(), time.perf_counter()
    out = engine.generate(chats, greedy)
    seconds, cpu_s = time.perf_counter() - t0, cpu_seconds() - c0
    t1 = time.perf_counter()
    votes = [v for verdict in judge_pairs(engine, const, pairs, config) for v in verdict.votes]
    judge_s = time.perf_counter() - t1
    tokens = sum(c[0].num_tokens for c in out)
    return {"dtype": getattr(engine, "dtype", None), "tok_s": tokens / seconds, "tokens": tokens,
            "seconds": seconds, "tok_per_cpu_s": tokens / cpu_s if cpu_s else None,
            "judge_per_s": len(votes) / judge_s, "texts": [c[0].text for c in out],
            "p_a": [v.p_a for v in votes], "gaps": [g for v in votes for g in top_gaps(v.raw)],
            "france": engine.generate([FRANCE], replace(greedy, max_tokens=24))[0][0].text}


def _correlations(x: list[float], y: list[float]) -> tuple[float | None, float | None]:
    from scipy import stats

    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None, None
    return float(stats.pearsonr(x, y).statistic), float(stats.spearmanr(x, y).statistic)


def compare(ref: dict, other: dict, tokenize) -> dict:
    """Agreement of ``other`` with ``ref`` (greedy texts, judge p_a) and each one's own figures."""
    texts = list(zip(ref["texts"], other["texts"], strict=True))
    prefixes = [common_prefix(tokenize(a), tokenize(b)) for a, b in texts]
    both = [(a, b) for a, b in zip(ref["p_a"], other["p_a"], strict=True) if a is not None and b is not None]
    pearson, spearman = _correlations([a for a, _ in both], [b for _, b in both])

    def own(r: dict) -> dict:
        return {"dtype": r["dtype"], "tok_s": round(r["tok_s"], 2), "tokens": r["tokens"],
                "seconds": round(r["seconds"], 2),
                "tok_per_cpu_s": round(r["tok_per_cpu_s"], 2) if r["tok_per_cpu_s"] else None,
                "startup_s": round(r.get("startup_s", 0.0), 1), "judge_per_s": round(r["judge_per_s"], 3),
                "unscored_votes": sum(p is None for p in r["p_a"]),
                "distinct_p_a": len({round(p, 4) for p in r["p_a"] if p is not None}),
                "top_gaps_on_bf16_grid": round(s, 4) if (s := on_grid_share(r["gaps"])) is not None else None,
                "france": r["france"]}

    return {
        "speed_ratio": round(other["tok_s"] / ref["tok_s"], 3),
        "greedy_identical_share": round(sum(a == b for a, b in texts) / len(texts), 4) if texts else None,
        "greedy_mean_common_prefix_tokens": round(sum(prefixes) / len(prefixes), 2) if prefixes else None,
        "greedy_mean_tokens_ref": round(sum(len(tokenize(a)) for a, _ in texts) / len(texts), 2) if texts else None,
        "votes": len(ref["p_a"]), "votes_compared": len(both),
        "p_a_pearson": round(pearson, 4) if pearson is not None else None,
        "p_a_spearman": round(spearman, 4) if spearman is not None else None,
        "p_a_mean_abs_diff": round(sum(abs(a - b) for a, b in both) / len(both), 4) if both else None,
        "preference_flip_share": round(sum((a > 0.5) != (b > 0.5) for a, b in both) / len(both), 4) if both else None,
        "ref": own(ref), "other": own(other),
    }


def run_bench(*, prompts: int = 32, max_tokens: int = 64, pairs: int = 8, principles: int = 4,
              model: str = "smollm2-135m", data: Path | None = None, kv_cache_gib: float = 1.0) -> dict:
    from transformers import AutoTokenizer

    from bench.generate import default_data, load_prompts, machine_info, stdout_to_stderr
    from bench.judge import WARMUP_PAIRS, load_pairs
    from constitution import DEFAULT_PATH, load_constitution
    from generator.engines import make_engine
    from generator.models import resolve
    from judge.config import JudgeConfig

    path = Path(data) if data else default_data()
    chats = load_prompts(path, prompts)
    every = load_pairs(path, pairs + WARMUP_PAIRS)
    const = load_constitution(DEFAULT_PATH)
    config = JudgeConfig(model=model, principles_per_pair=principles, orders="both")
    load_before = os.getloadavg()[0]
    runs = {}
    with stdout_to_stderr():
        for dtype in DTYPES:  # one engine at a time: each gets the whole machine
            started = time.perf_counter()
            engine = make_engine("vllm", model, dtype=dtype, kv_cache_gib=kv_cache_gib)
            startup = time.perf_counter() - started
            try:
                runs[dtype] = {**dtype_pass(engine, chats, const, every[pairs:], every[:pairs], config, max_tokens),
                               "startup_s": startup}
            finally:
                engine.close()
            log.info("%s: %.1f tok/s, %.2f comparisons/s", dtype, runs[dtype]["tok_s"], runs[dtype]["judge_per_s"])
    tok = AutoTokenizer.from_pretrained(resolve(model))
    result = compare(runs["float32"], runs["bfloat16"], lambda t: tok(t, add_special_tokens=False)["input_ids"])
    result["float32"], result["bfloat16"] = result.pop("ref"), result.pop("other")
    result["speed_ratio_bf16_vs_fp32"] = result.pop("speed_ratio")
    return {"model": model, "prompts": prompts, "max_tokens": max_tokens, "pairs": pairs, "principles": principles,
            **result, "machine": machine_info(),
            "vllm_omp_threads_bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto"),
            "loadavg_1m_before": round(load_before, 2), "loadavg_1m_after": round(os.getloadavg()[0], 2),
            "data": str(path)}


def register(bench_app: typer.Typer) -> None:
    @bench_app.command("dtype")
    def dtype(prompts: int = typer.Option(32, "--prompts", help="HH-RLHF prompts for speed and greedy agreement."),
              max_tokens: int = typer.Option(64, "--max-tokens", help="Most new tokens per greedy answer."),
              pairs: int = typer.Option(8, "--pairs", help="HH-RLHF pairs for judge agreement."),
              principles: int = typer.Option(4, "--principles", help="Principles per pair (both orders each)."),
              model: str = typer.Option("smollm2-135m", "--model", help="Embedded name, folder or Hub id."),
              data: Path = typer.Option(None, "--data", help="HH-RLHF jsonl(.gz) (default ../shared/data)."),
              kv_cache_gib: float = typer.Option(1.0, "--kv-cache-gib", help="vLLM KV cache (CPU)."),
              as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object on stdout.")) -> None:
        """bfloat16 vs float32 on in-process vLLM: speed, greedy and judge agreement, float32 logits."""
        from bench.args import require_positive

        require_positive(prompts=prompts, max_tokens=max_tokens, pairs=pairs, principles=principles,
                         kv_cache_gib=kv_cache_gib)
        r = run_bench(prompts=prompts, max_tokens=max_tokens, pairs=pairs, principles=principles, model=model,
                      data=data, kv_cache_gib=kv_cache_gib)
        if as_json:
            typer.echo(json.dumps(r))
            return
        from bench.generate import describe_machine

        typer.echo(describe_machine(r["machine"]))
        for d in DTYPES:
            x = r[d]
            typer.echo(f"{d:9s} {x['tok_s']:7.1f} tok/s  judge {x['judge_per_s']:6.2f} comparisons/s  "
                       f"distinct p_a {x['distinct_p_a']}/{r['votes']}  top gaps on bf16 grid "
                       f"{x['top_gaps_on_bf16_grid']}  France: {x['france']!r}")
        typer.echo(f"bf16/fp32 speed x{r['speed_ratio_bf16_vs_fp32']}; greedy identical "
                   f"{r['greedy_identical_share']} (common prefix {r['greedy_mean_common_prefix_tokens']} of "
                   f"{r['greedy_mean_tokens_ref']} tokens); p_a Pearson {r['p_a_pearson']} Spearman "
                   f"{r['p_a_spearman']}, preference flips {r['preference_flip_share']}")
