"""``rlaif bench generate``: generation tokens/s of the vllm engine vs the transformers engine.

Both engines get the SAME prompts (the first human turn of HH-RLHF harmless-base test rows, as
chat messages) and the SAME sampling (temperature 0.7, fixed seed, ``n`` samples, ``max_tokens``).
Neither engine can force a fixed length in the same way, so throughput counts the tokens each
engine really generated (EOS included, as vLLM counts it) over the wall time of one ``generate``
call holding all prompts. Start-up and one short warm-up call per engine are not timed. The
engines run one after the other (vLLM first, closed before transformers loads), each with the
whole machine.

The two engines are compared at the SAME dtype (``--dtype``; auto: float32 on CPUs, bfloat16 on
GPUs, as ``generator/engines/vllm_cpu.py`` resolves it for vLLM), so the ratio measures the engine,
not the number format. One more vLLM pass in the other dtype is reported as its own figure
(``vllm_other_dtype``), never mixed into the ratio; ``--no-other-dtype`` skips it. The CPU it ran
on (model, ISA flags, native bf16) is part of the output: the other dtype's speed depends on it.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import typer

log = logging.getLogger(__name__)

DATA_NAME = "hh-rlhf-harmless-base-test.jsonl.gz"


def default_data() -> Path:
    """The shared HH-RLHF file: ``../shared/data`` next to the repository, else $RLAIF_SHARED_DATA."""
    near = Path(__file__).resolve().parents[2] / "shared" / "data" / DATA_NAME
    if near.is_file():
        return near
    return Path(os.environ.get("RLAIF_SHARED_DATA", "/work/shared/data")) / DATA_NAME


def load_prompts(path: Path, n: int) -> list[list[dict]]:
    """The first human turn of the first ``n`` rows (from "chosen"), as one-message chats."""
    from plumbing.inputs import hh_messages

    out: list[list[dict]] = []
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if len(out) >= n:
                break
            row = json.loads(line)
            first = next((m for m in hh_messages(row.get("chosen", "")) if m["role"] == "user"), None)
            if first and first["content"]:
                out.append([{"role": "user", "content": first["content"]}])
    if len(out) < n:
        raise FileNotFoundError(f"{path} holds only {len(out)} usable prompts; asked for {n}")
    return out


@contextmanager
def stdout_to_stderr():
    """Send fd 1 to stderr (vLLM and its worker processes log to stdout), so --json stays one line."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def cpu_seconds() -> float:
    """User + system CPU time of this process and its children (vLLM runs in worker processes)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


# The ISA flags that decide which kernels vLLM and torch use on a CPU (x86, then ARM).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16",
             "amx_int8", "asimd", "bf16", "i8mm", "sve")


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's name ('model name' on x86, else the platform's processor or machine string)."""
    import platform

    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("model name", "cpu model", "hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """The CPU the figures were measured on: model, CPUs, ISA flags present, native bf16, torch's ISA."""
    import torch

    from generator.engines.vllm_cpu import cpu_flags, native_bf16

    flags = cpu_flags()
    return {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
            "cpu_flags": [f for f in ISA_FLAGS if f in flags], "native_bf16": native_bf16(flags),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available()}


def describe_machine(m: dict) -> str:
    """One line for humans: the CPU and what decides its speed in each dtype."""
    return (f"CPU: {m['cpu_model']} ({m['cpu_count']} CPUs), torch ISA {m['torch_cpu_capability']}, "
            f"native bf16: {m['native_bf16']}, flags: {' '.join(m['cpu_flags']) or '-'}")


def other_dtype(dtype: str) -> str:
    """float32 <-> bfloat16 (float16 and others: float32)."""
    return "bfloat16" if dtype == "float32" else "float32"


def time_engine(name: str, model: str, prompts: list, sampling, **engine_kwargs) -> dict:
    """Start the engine, warm it up (untimed), time one generate() over all prompts, close it."""
    from dataclasses import replace

    from generator.engines import make_engine
    from generator.models import resolve

    started = time.perf_counter()
    engine = make_engine(name, resolve(model), **engine_kwargs)
    startup = time.perf_counter() - started
    try:
        engine.generate(prompts[:4], replace(sampling, max_tokens=8))  # warm-up: allocations, kernels
        c0, t0 = cpu_seconds(), time.perf_counter()
        out = engine.generate(prompts, sampling)
        seconds, cpu_s = time.perf_counter() - t0, cpu_seconds() - c0
    finally:
        engine.close()
    tokens = sum(c.num_tokens for samples in out for c in samples)
    empty = sum(1 for samples in out for c in samples if not c.text.strip())
    log.info("%s: %d tokens in %.2f s = %.1f tok/s (startup %.1f s)", name, tokens, seconds, tokens / seconds,
             startup)
    # tok per CPU-second is the contention-robust figure on a shared box; tok/s is the headline.
    return {"dtype": getattr(engine, "dtype", None), "tok_s": tokens / seconds, "tokens": tokens, "seconds": seconds, "cpu_s": cpu_s,
            "tok_per_cpu_s": tokens / cpu_s if cpu_s else None, "startup_s": startup,
            "samples": sum(len(s) for s in out), "empty_samples": empty}


def bench_generate(*, prompts: int = 64, n: int = 2, max_tokens: int = 64, model: str = "smollm2-135m",
                   data: Path | None = None, seed: int = 0, hf_batch_size: int = 8,
                   kv_cache_gib: float = 1.0, vllm_dtype: str = "auto", with_other_dtype: bool = True) -> dict:
    import torch

    from generator.engines import Sampling
    from generator.engines.vllm_cpu import resolve_dtype

    path = Path(data) if data else default_data()
    chats = load_prompts(path, prompts)
    sampling = Sampling(n=n, temperature=0.7, top_p=1.0, max_tokens=max_tokens, seed=seed)
    dtype = resolve_dtype(vllm_dtype, cpu=not torch.cuda.is_available())
    load_before = os.getloadavg()[0]
    with stdout_to_stderr():
        v = time_engine("vllm", model, chats, sampling, kv_cache_gib=kv_cache_gib, dtype=dtype)
        h = time_engine("transformers", model, chats, sampling, batch_size=hf_batch_size, dtype=dtype)
        o = time_engine("vllm", model, chats, sampling, kv_cache_gib=kv_cache_gib, dtype=other_dtype(dtype)) \
            if with_other_dtype else None
    return {"vllm_tok_s": round(v["tok_s"], 2), "transformers_tok_s": round(h["tok_s"], 2),
            "speedup": round(v["tok_s"] / h["tok_s"], 2),
            "speedup_per_cpu_s": round(v["tok_per_cpu_s"] / h["tok_per_cpu_s"], 2)
            if v["tok_per_cpu_s"] and h["tok_per_cpu_s"] else None, "prompts": prompts, "n": n, "max_tokens": max_tokens,
            "model": model, "temperature": sampling.temperature, "seed": seed,
            "vllm": {k: round(x, 2) if isinstance(x, float) else x for k, x in v.items()},
            "transformers": {k: round(x, 2) if isinstance(x, float) else x for k, x in h.items()},
            "vllm_dtype": v["dtype"], "transformers_dtype": h["dtype"],
            # The same vLLM work in the other dtype: its own figure, not part of the ratio above.
            "vllm_other_dtype": {k: round(x, 2) if isinstance(x, float) else x for k, x in o.items()} if o else None,
            "vllm_other_dtype_tok_s": round(o["tok_s"], 2) if o else None, "machine": machine_info(),
            "transformers_batch_size": hf_batch_size, "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "vllm_omp_threads_bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto"),
            # The box may be shared: a 1-minute load average above cpu_count means the figures are noisy.
            "loadavg_1m_before": round(load_before, 2), "loadavg_1m_after": round(os.getloadavg()[0], 2),
            "data": str(path)}


def register(bench_app: typer.Typer) -> None:
    @bench_app.command("generate")
    def generate(prompts: int = typer.Option(64, "--prompts", help="HH-RLHF prompts (first human turn)."),
                 n: int = typer.Option(2, "--n", help="Samples per prompt."),
                 max_tokens: int = typer.Option(64, "--max-tokens", help="Most new tokens per sample."),
                 model: str = typer.Option("smollm2-135m", "--model", help="Embedded name, folder or Hub id."),
                 data: Path = typer.Option(None, "--data", help=f"HH-RLHF jsonl(.gz) (default ../shared/data/"
                                                                f"{DATA_NAME})."),
                 seed: int = typer.Option(0, "--seed", help="Sampling seed (same for both engines)."),
                 hf_batch_size: int = typer.Option(8, "--hf-batch-size", help="Prompts per transformers batch."),
                 kv_cache_gib: float = typer.Option(1.0, "--kv-cache-gib", help="vLLM KV cache (CPU)."),
                 vllm_dtype: str = typer.Option("auto", "--dtype", "--vllm-dtype",
                                                help="dtype of BOTH engines (auto: float32 on CPUs, bfloat16 "
                                                     "on GPUs)."),
                 with_other: bool = typer.Option(True, "--other-dtype/--no-other-dtype",
                                                 help="Also time vLLM in the other dtype (its own figure)."),
                 as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object on stdout.")
                 ) -> None:
        """Tokens/s of vllm vs transformers on the same prompts and sampling, and the ratio."""
        from bench.args import require_positive

        require_positive(prompts=prompts, n=n, max_tokens=max_tokens, hf_batch_size=hf_batch_size,
                         kv_cache_gib=kv_cache_gib)
        result = bench_generate(prompts=prompts, n=n, max_tokens=max_tokens, model=model, data=data, seed=seed,
                                hf_batch_size=hf_batch_size, kv_cache_gib=kv_cache_gib, vllm_dtype=vllm_dtype,
                                with_other_dtype=with_other)
        if as_json:
            typer.echo(json.dumps(result))
            return
        typer.echo(f"{prompts} prompts x {n} samples x <= {max_tokens} tokens on {model}, {result['vllm_dtype']}: "
                   f"vllm {result['vllm_tok_s']:.1f} tok/s, transformers {result['transformers_tok_s']:.1f} tok/s "
                   f"(x{result['speedup']:.2f})")
        if result["vllm_other_dtype"]:
            typer.echo(f"vllm in {result['vllm_other_dtype']['dtype']}: {result['vllm_other_dtype_tok_s']:.1f} tok/s "
                       f"(not part of the ratio)")
        typer.echo(describe_machine(result["machine"]))
