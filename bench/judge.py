"""``rlaif bench judge``: reading option logprobs vs generating the verdict, vLLM vs transformers.

The same HH-RLHF pairs (chosen vs rejected final replies), principles and model go through

(a) logprob scoring on vLLM: ``judge/pairwise.jinja``, ``max_tokens=1``, top-20 logprobs
    (arXiv 2212.08073 sec 4.1), prefix cache on;
(b) the usual LLM-as-judge on vLLM: ``judge/pairwise_generate.jinja`` as a chat message, the
    verdict generated greedily (max_tokens 64) and the letter parsed from the text;
(c) logprob scoring on the transformers engine (batched, left padding).

(a) and (c) run at the SAME dtype (``--dtype``; auto: float32 on CPUs, bfloat16 on GPUs, as
``generator/engines/vllm_cpu.py`` resolves it), so their ratio measures the engine. One more pass
of (a) in the other dtype is reported beside them as its own figure (``logprob_vllm_other_dtype``:
speed, and how far its p_a moves from (a)), never mixed into a ratio; ``--no-other-dtype`` skips it.

With ``--speed`` (the default) the same command also times the two prompt layouts, counts the
fresh tokens against a perfect prefix cache, measures the machine's matmul peak and fits how judge
time scales with the number of pairs (bench/judge_speed.py); ``--no-engines`` skips (a)-(c).

Both option orders are scored. Each method is warmed up (untimed) on two other pairs first, so
the timed pass starts with the constitution's shared few-shot prefix cached, as in a long run,
but never with the measured prompts themselves. Pairs longer than ``MAX_CHARS`` characters are
skipped so that every method can judge every prompt within the model context.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import typer

from bench.judge_speed import logprob_pass, parse_sizes, speed_figures, time_call, token_use

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
_DATA_NAME = "hh-rlhf-harmless-base-test.jsonl.gz"
# ../shared/data next to the repository, else $RLAIF_SHARED_DATA (as the tests find it).
DEFAULT_DATA = ROOT.parent / "shared" / "data" / _DATA_NAME if (ROOT.parent / "shared" / "data").is_dir() \
    else Path(os.environ.get("RLAIF_SHARED_DATA", "/work/shared/data")) / _DATA_NAME
PAIRWISE_GENERATE = "judge/pairwise_generate.jinja"
MAX_CHARS = 3000
WARMUP_PAIRS = 2
# A reply that starts with the letter alone ("B", "(A) ...", "A."; not the article in "A better ..."),
# else a stated choice ("the answer is B", "option A", "B is better").
_LEAD = re.compile(r"^\W*\(?([AB])(?:\)|[.:,;!]|\s*$)")
_STATED = re.compile(r"(?i:\b(?:answer|option|response|choice))\s*(?:(?i:is)|:)?\s*:?\s*\(?([AB])\)?(?![A-Za-z])"
                     r"|\(?\b([AB])\)?\s+(?i:is\s+(?:the\s+)?(?:better|best|less|more))")


def register(bench_app: typer.Typer) -> None:
    bench_app.command("judge")(bench_judge)


def parse_letter(text: str) -> str | None:
    """The option letter of a generated verdict, or None when it cannot be read unambiguously."""
    m = _LEAD.search(text) or _STATED.search(text)
    return next((g.upper() for g in m.groups() if g), None) if m else None


def load_pairs(path: Path, n: int):
    """The first ``n`` usable HH-RLHF rows as judge pairs: first = chosen reply, second = rejected."""
    from judge.errors import JudgeError
    from judge.scoring import Pair
    from plumbing.inputs import hh_split, read_rows
    from plumbing.runs import item_id

    pairs = []
    for row in read_rows(path):
        if len(pairs) >= n:
            break
        if not isinstance(row, dict) or not row.get("chosen") or not row.get("rejected"):
            continue
        conversation, chosen = hh_split(row["chosen"])
        other, rejected = hh_split(row["rejected"])
        size = sum(len(m["content"]) for m in conversation) + len(chosen) + len(rejected)
        if other != conversation or not chosen or not rejected or chosen == rejected or size > MAX_CHARS:
            continue
        pairs.append(Pair(item_id(conversation, chosen, rejected), conversation, chosen, rejected))
    if len(pairs) < n:
        raise JudgeError(f"{path}: only {len(pairs)} usable pairs (wanted {n}); lower --pairs")
    return pairs


def generate_pass(engine, const, pairs, config) -> tuple[float, list, dict]:
    """(seconds, parsed letter per task (None = unparseable), token use)."""
    from generator.engines import Sampling
    from judge.scoring import build_tasks
    from prompts import render

    tasks, _ = build_tasks(const, pairs, config)
    prompts = [[{"role": "user", "content": render(PAIRWISE_GENERATE, config.templates, **t.context)}]
               for t in tasks]
    sampling = Sampling(n=1, temperature=0.0, top_p=1.0, max_tokens=64, seed=0)
    before = engine.stats()
    seconds, outs = time_call(lambda: engine.generate(prompts, sampling))
    return seconds, [parse_letter(o[0].text) for o in outs], token_use(before, engine.stats())


def other_dtype_figures(dtype: str, seconds: float, p_ref: list, p_other: list) -> dict:
    """The other-dtype logprob pass beside (a): its speed, and how far its p_a moves from (a)'s."""
    both = [(a, b) for a, b in zip(p_ref, p_other, strict=True) if a is not None and b is not None]
    n = len(p_other)
    return {"dtype": dtype, "per_s": round(n / seconds, 3) if seconds else None, "seconds": round(seconds, 2),
            "unscored": sum(p is None for p in p_other),
            "distinct_p_a": len({round(p, 4) for p in p_other if p is not None}),
            "mean_abs_diff_p_a": round(sum(abs(a - b) for a, b in both) / len(both), 4) if both else None,
            "preference_flip_share": round(sum((a > 0.5) != (b > 0.5) for a, b in both) / len(both), 4)
            if both else None}


def _other_dtype_pass(model: str, dtype: str, const, warm, timed, config) -> tuple[float, list]:
    from generator.engines import make_engine

    engine = make_engine("vllm", model, dtype=dtype)
    try:
        logprob_pass(engine, const, warm, config)
        seconds, p_other, _ = logprob_pass(engine, const, timed, config)
    finally:
        engine.close()
    log.info("(a) in %s: %d comparisons in %.1f s", dtype, len(p_other), seconds)
    return seconds, p_other


def _same_dtype_passes(model, dtype, const, warm, timed, config, hf_batch_size):
    """(a) and (b) on vLLM, (c) on transformers, all in ``dtype``; one engine at a time."""
    from generator.engines import make_engine
    from judge.build import vllm_judge_kwargs

    engine = make_engine("vllm", model, dtype=dtype, **vllm_judge_kwargs())
    try:
        logprob_pass(engine, const, warm, config)
        t_a, p_vllm, hit_a = logprob_pass(engine, const, timed, config)
        log.info("(a) logprob on vllm: %d comparisons in %.1f s", len(p_vllm), t_a)
        generate_pass(engine, const, warm, config)
        t_b, letters, hit_b = generate_pass(engine, const, timed, config)
        log.info("(b) generate+parse on vllm: %d comparisons in %.1f s", len(letters), t_b)
    finally:
        engine.close()
    engine = make_engine("transformers", model, batch_size=hf_batch_size, dtype=dtype)
    try:
        logprob_pass(engine, const, warm, config)
        t_c, p_hf, _ = logprob_pass(engine, const, timed, config)
        log.info("(c) logprob on transformers: %d comparisons in %.1f s", len(p_hf), t_c)
        hf_dtype = engine.dtype
    finally:
        engine.close()
    return (t_a, p_vllm, hit_a), (t_b, letters, hit_b), (t_c, p_hf), hf_dtype


def run_bench(pairs: int, principles: int, model: str, data: Path, hf_batch_size: int,
              vllm_dtype: str = "auto", with_other_dtype: bool = True, engines: bool = True,
              scaling_sizes: list[int] | None = None, speed: bool = True) -> dict:
    import torch

    from bench.generate import machine_info, other_dtype, stdout_to_stderr
    from constitution import DEFAULT_PATH, load_constitution
    from generator.engines.vllm_cpu import resolve_dtype
    from judge.config import JudgeConfig

    sizes = scaling_sizes if scaling_sizes is not None else [32, 64, 128]
    const = load_constitution(DEFAULT_PATH)
    every = load_pairs(data, pairs + WARMUP_PAIRS + (sum(sizes) if speed else 0))
    timed, warm, extra = every[:pairs], every[pairs:pairs + WARMUP_PAIRS], every[pairs + WARMUP_PAIRS:]
    config = JudgeConfig(model=model, principles_per_pair=principles, orders="both")
    dtype = resolve_dtype(vllm_dtype, cpu=not torch.cuda.is_available())
    out: dict = {"model": model, "pairs": pairs, "principles": principles, "vllm_dtype": dtype}
    with stdout_to_stderr():
        if engines:
            a, b, c, hf_dtype = _same_dtype_passes(model, dtype, const, warm, timed, config, hf_batch_size)
            other = _other_dtype_pass(model, other_dtype(dtype), const, warm, timed, config) \
                if with_other_dtype else None
            out.update(summarize(model, pairs, principles, a, b, c), transformers_dtype=hf_dtype,
                       transformers_batch_size=hf_batch_size,
                       logprob_vllm_other_dtype=other_dtype_figures(other_dtype(dtype), other[0], a[1], other[1])
                       if other else None)
        if speed:
            out.update(speed_figures(model, dtype, const, warm, timed, extra, sizes, principles))
    return {**out, "machine": machine_info()}


def summarize(model, pairs, principles, a, b, c) -> dict:
    (t_a, p_vllm, hit_a), (t_b, letters, hit_b), (t_c, p_hf) = a, b, c
    n = len(p_vllm)
    both = [(x, y) for x, y in zip(p_vllm, letters, strict=True) if x is not None and y is not None]
    diffs = [abs(x - y) for x, y in zip(p_vllm, p_hf, strict=True) if x is not None and y is not None]
    return {
        "model": model, "vllm_omp_threads_bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto"), "pairs": pairs, "principles": principles, "orders": 2, "comparisons": n,
        "logprob_per_s": round(n / t_a, 3), "generate_per_s": round(n / t_b, 3),
        "transformers_per_s": round(n / t_c, 3),
        "speedup_vs_generate": round(t_b / t_a, 2), "speedup_vs_transformers": round(t_c / t_a, 2),
        "seconds": {"logprob_vllm": round(t_a, 2), "generate_vllm": round(t_b, 2),
                    "logprob_transformers": round(t_c, 2)},
        "prefix_cache_hit_rate": {"logprob_vllm": hit_a["hit_rate"], "generate_vllm": hit_b["hit_rate"]},
        # Per comparison: the prompt tokens computed afresh and the tokens generated. On a CPU the
        # forward pass is compute-bound, so time follows (uncached prompt + generated) tokens.
        "tokens_per_comparison": {name: {k: round(use[k] / n, 1) for k in ("prompt_tokens", "uncached_prompt_tokens",
                                                                            "generated_tokens") if use[k] is not None}
                                  for name, use in (("logprob_vllm", hit_a), ("generate_vllm", hit_b))} if n else {},
        "logprob_unscored": sum(p is None for p in p_vllm),
        "parse_failures": sum(x is None for x in letters),
        "parse_failure_rate": round(sum(x is None for x in letters) / n, 4) if n else None,
        "agreement_logprob_vs_generate": round(sum((x > 0.5) == (y == "A") for x, y in both) / len(both), 4)
        if both else None,
        "mean_abs_diff_p_a_vllm_vs_transformers": round(sum(diffs) / len(diffs), 4) if diffs else None,
    }


def bench_judge(
    pairs: int = typer.Option(32, help="HH-RLHF pairs to judge (chosen vs rejected final replies)."),
    principles: int = typer.Option(4, help="Principles per pair (each scored in both orders)."),
    model: str = typer.Option("smollm2-135m", help="Judge model."),
    data: Path = typer.Option(DEFAULT_DATA, help="HH-RLHF jsonl(.gz) with chosen/rejected transcripts."),
    hf_batch_size: int = typer.Option(16, help="Batch size of the transformers engine."),
    vllm_dtype: str = typer.Option("auto", "--dtype", "--vllm-dtype",
                                   help="dtype of both engines (auto: float32 on CPUs, bfloat16 on GPUs)."),
    with_other: bool = typer.Option(True, "--other-dtype/--no-other-dtype",
                                    help="Also time (a) in the other dtype (its own figure)."),
    engines: bool = typer.Option(True, "--engines/--no-engines",
                                 help="Time (a) logprob vs (b) generate-and-parse vs (c) transformers."),
    speed: bool = typer.Option(True, "--speed/--no-speed", help="Time both prompt layouts against the ideal "
                               "prefix cache and the machine's matmul peak, and the scaling runs."),
    scaling_sizes: str = typer.Option("32,64,128", "--scaling-sizes",
                                      help="Pair counts of the scaling runs (comma-separated; disjoint pairs)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Judge comparisons/s: logprob scoring (vLLM) vs generate-and-parse (vLLM) vs logprob (transformers);
    the two prompt layouts, fresh tokens vs a perfect prefix cache, FLOP rate vs the matmul peak, scaling."""
    from bench.args import BenchArgumentError, require_positive

    require_positive(pairs=pairs, principles=principles, hf_batch_size=hf_batch_size)
    sizes = parse_sizes(scaling_sizes)
    if not engines and not speed:
        raise BenchArgumentError("--no-engines with --no-speed leaves nothing to measure; drop one of them")
    result = run_bench(pairs, principles, model, data, hf_batch_size, vllm_dtype, with_other, engines, sizes, speed)
    if as_json:
        typer.echo(json.dumps(result))
        return
    _print(result, pairs, principles, model)


def _print(r: dict, pairs: int, principles: int, model: str) -> None:
    from bench.generate import describe_machine

    if "layouts" in r:
        for name, f in r["layouts"].items():
            typer.echo(f"layout {name:13s} {f['per_s']:8.2f} comparisons/s, fresh prompt tokens/comparison "
                       f"{f['uncached_prompt_tokens_per_comparison']} (ideal, 16-token blocks: "
                       f"{f['ideal_uncached_tokens_per_comparison']}), {f['judge_gflops']} GFLOP/s = "
                       f"{f['fraction_of_peak']} of the {r['peak_gflops']} GFLOP/s matmul peak")
        runs = ", ".join(f"{x['pairs']} pairs {x['seconds']} s" for x in r["scaling"]["runs"])
        typer.echo(f"layout speed-up shared-prefix / cai = {r['layout_speedup']}x; scaling exponent "
                   f"{r['scaling_exponent']} ({runs})")
    if "comparisons" not in r:
        typer.echo(describe_machine(r["machine"]))
        return
    typer.echo(f"{r['comparisons']} comparisons = {pairs} pairs x {principles} principles x 2 orders ({model})")
    typer.echo(f"(a) logprob, vllm:          {r['logprob_per_s']:8.2f} comparisons/s  "
               f"prefix-cache hit {r['prefix_cache_hit_rate']['logprob_vllm']}")
    typer.echo(f"(b) generate+parse, vllm:   {r['generate_per_s']:8.2f} comparisons/s  "
               f"prefix-cache hit {r['prefix_cache_hit_rate']['generate_vllm']}  "
               f"parse failures {r['parse_failures']}/{r['comparisons']}")
    typer.echo(f"(c) logprob, transformers:  {r['transformers_per_s']:8.2f} comparisons/s")
    typer.echo(f"speed-up (a)/(b) = {r['speedup_vs_generate']}x, (a)/(c) = {r['speedup_vs_transformers']}x; "
               f"agreement (a) vs (b) {r['agreement_logprob_vs_generate']}, "
               f"mean |p_a(vllm) - p_a(hf)| {r['mean_abs_diff_p_a_vllm_vs_transformers']} (both {r['vllm_dtype']})")
    if (o := r["logprob_vllm_other_dtype"]) is not None:
        typer.echo(f"(a) in {o['dtype']} (not part of the ratios): {o['per_s']:.2f} comparisons/s, "
                   f"mean |p_a - p_a(a)| {o['mean_abs_diff_p_a']}, preference flips {o['preference_flip_share']}, "
                   f"distinct p_a {o['distinct_p_a']}")
    typer.echo(describe_machine(r["machine"]))
