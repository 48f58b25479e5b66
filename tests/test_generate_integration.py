"""generate / revise on the embedded model with real vLLM; crash-resume of a real subprocess."""

from __future__ import annotations

import gzip
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from generator.engines.options import EngineOptions
from generator.generate import GenerateConfig, run_generate
from plumbing.inputs import read_prompts
from plumbing.runs import load, read_manifest, shard_files

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


def hh_prompts(tmp_path, shared_data, n):
    path = tmp_path / f"hh-{n}.jsonl"
    with gzip.open(shared_data / "hh-rlhf-harmless-base-test.jsonl.gz", "rt") as f:
        path.write_text("".join(line for _, line in zip(range(n), f, strict=False)))
    return path


def test_generate_16_hh_prompts_vllm(tmp_path, shared_data, vllm_engine):
    prompts = hh_prompts(tmp_path, shared_data, 16)
    config = GenerateConfig(prompts=prompts, out=tmp_path / "gen", n=2, max_tokens=48,
                            engine=EngineOptions(engine="vllm", batch_size=16))
    counts = run_generate(config, engine=vllm_engine)
    assert counts["train"] == 16
    ds = load(tmp_path / "gen")
    assert ds.num_rows == 16
    assert all(len(r) == 2 for r in ds["responses"])
    assert sum(bool(t.strip()) for r in ds["responses"] for t in r) >= 30  # real text, not blanks


@pytest.mark.timeout(1800)
def test_revise_two_rounds_vllm(tmp_path, shared_data, vllm_engine):
    from constitution import DEFAULT_PATH
    from generator.revise import ReviseConfig, run_revise

    prompts = hh_prompts(tmp_path, shared_data, 16)
    config = ReviseConfig(prompts=prompts, out=tmp_path / "rev", constitution=DEFAULT_PATH, rounds=2,
                          max_tokens=32, engine=EngineOptions(engine="vllm", batch_size=16))
    counts = run_revise(config, engine=vllm_engine)
    ds = load(tmp_path / "rev")
    assert counts["train"] + counts["errors"] == 16
    assert ds.num_rows == 16, f"errors: {counts}"
    for row in ds:
        assert len(row["critiques"]) == len(row["revisions"]) == len(row["principle_ids"]) == 2
        assert row["messages"][-1] == {"role": "assistant", "content": row["revisions"][-1]}
        assert row["messages"][:-1] == row["prompt"]
    assert len({tuple(r) for r in ds["principle_ids"]}) > 1  # principles are sampled, not fixed


def _generate_cmd(prompts, out, base_url):
    return [sys.executable, "-m", "rlaif", "generate", "--prompts", str(prompts), "--out", str(out),
            "--engine", "openai", "--base-url", base_url, "--model", "smollm2-135m", "--n", "2",
            "--temperature", "0", "--max-tokens", "16", "--batch-size", "2", "--quiet"]


def test_sigkill_three_times_then_resume(tmp_path, shared_data, vllm_server):
    """kill -9 a real `rlaif generate` mid-run three times; the resumed run equals an uninterrupted one
    (greedy): the same ids AND the same responses per id."""
    prompts = hh_prompts(tmp_path, shared_data, 24)  # 12 shards: room for 3 kills and a resume
    out = tmp_path / "killed"
    rng = random.Random(0)
    kills = 0
    while kills < 3:
        before = len(shard_files(out))
        proc = subprocess.Popen(_generate_cmd(prompts, out, vllm_server), cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 240
        while len(shard_files(out)) <= before and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.5))  # land anywhere: mid-request, mid-write, between batches
        if proc.poll() is not None:
            pytest.fail(f"generate finished before it could be killed ({proc.returncode}): {proc.stderr.read()}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        for shard in shard_files(out):
            pq.read_table(shard)  # every shard readable after every kill
    done = subprocess.run(_generate_cmd(prompts, out, vllm_server), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    clean = subprocess.run(_generate_cmd(prompts, tmp_path / "clean", vllm_server), cwd=ROOT,
                           capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    ids = load(out)["id"]
    assert len(ids) == len(set(ids)) == 24, "duplicates or losses after resume"
    assert sorted(ids) == sorted(load(tmp_path / "clean")["id"])
    resumed = {r["id"]: r["responses"] for r in load(out)}
    uninterrupted = {r["id"]: r["responses"] for r in load(tmp_path / "clean")}
    assert resumed == uninterrupted
    assert len(read_manifest(out)["runtimes"]) == 4  # three killed starts and the resume, all recorded
    assert sorted(ids) == sorted(i.id for i in read_prompts(prompts))
