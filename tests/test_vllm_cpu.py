"""CPU defaults of the vllm engine: float32 on every CPU, OpenMP binding on small boxes."""

import pytest

from generator.engines import vllm_cpu
from generator.engines.vllm_cpu import (
    BIND_ENV,
    apply_thread_binding,
    native_bf16,
    resolve_dtype,
    thread_binding,
)


def test_cpu_flags_reads_x86_and_arm(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    assert vllm_cpu.cpu_flags(str(x86)) == {"fpu", "avx", "avx2", "fma"}
    assert vllm_cpu.cpu_flags(str(arm)) == {"fp", "asimd", "bf16", "i8mm"}
    assert vllm_cpu.cpu_flags(str(tmp_path / "missing")) == set()


@pytest.mark.parametrize("flags,cpu,native,expected", [
    ({"avx2", "fma"}, True, False, "float32"),           # AVX2 only: bf16 falls back to slow torch linears
    ({"avx512f", "avx512_bf16"}, True, True, "float32"),  # native bf16: still float32 (quality first)
    ({"amx_bf16", "amx_tile"}, True, True, "float32"),
    ({"asimd", "bf16"}, True, True, "float32"),
    ({"avx2"}, False, False, "bfloat16"),                 # GPU: bf16
])
def test_auto_dtype_is_float32_on_every_cpu(flags, cpu, native, expected):
    """Both CPU kinds are covered here whatever machine runs the test (the flags are given)."""
    assert native_bf16(flags) == native
    assert resolve_dtype("auto", cpu=cpu, flags=flags) == expected


def test_explicit_dtype_is_kept():
    assert resolve_dtype("bfloat16", cpu=True, flags={"avx2"}) == "bfloat16"
    assert resolve_dtype("float16", cpu=False) == "float16"


def test_thread_binding_small_and_large_machines():
    assert thread_binding([0, 1]) == "0-1"
    assert thread_binding([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert thread_binding([3]) == "3"
    assert thread_binding(list(range(16))) is None          # big machine: vLLM's auto binding
    assert thread_binding([0, 1], ranks=2) is None            # several workers: one list each, vLLM decides


def test_apply_thread_binding_respects_the_user(monkeypatch):
    monkeypatch.setattr(vllm_cpu, "thread_binding", lambda ranks=1: "0-1")
    env = {BIND_ENV: "nobind"}
    assert apply_thread_binding(env) == "nobind" and env[BIND_ENV] == "nobind"
    env = {}
    assert apply_thread_binding(env) == "0-1" and env[BIND_ENV] == "0-1"
    monkeypatch.setattr(vllm_cpu, "thread_binding", lambda ranks=1: None)
    env = {}
    assert apply_thread_binding(env) == "auto" and BIND_ENV not in env
