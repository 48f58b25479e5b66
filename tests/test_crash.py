"""SIGKILL at seeded random moments during every stage: nothing unreadable is left behind, and a re-run
equals an uninterrupted run (by ids and content).

generate, revise and judge run on the ``fake`` engine slowed by ``RLAIF_FAKE_DELAY_S`` (generator/engines/
fake.py) so each kill lands between two shards or mid-batch; judge-eval (not resumable: its output folder
appears whole or not at all, judge/evaluate.py) is killed at a random moment inside its measured run
time; ``align sft`` is killed just after a checkpoint folder appears in its hidden work folder. Two kills
per stage. "Readable" means: every ``*.json`` parses, every line of every ``*.jsonl`` parses, every
``*.parquet`` reads and every ``*.safetensors`` loads, for every file not under a hidden (temp) name.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import BASE_ENV

from plumbing.runs import load, read_manifest, shard_files

ROOT = Path(__file__).resolve().parents[1]
CONSTITUTION = ROOT / "constitution" / "default.yaml"
DELAY = 0.25  # seconds per fake engine call
N_PROMPTS = 12
BATCH = 2  # 6 shards per run: room for two kills and a resume


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "rlaif", *map(str, args), "--quiet"]


def _env(delay: float = DELAY) -> dict:
    return {**BASE_ENV, "RLAIF_FAKE_DELAY_S": str(delay)}


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def assert_readable(root: Path) -> int:
    """Every visible json/jsonl/parquet/safetensors file under ``root`` loads; returns how many were checked."""
    from safetensors.torch import load_file

    checked = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not _hidden(p, root)):
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            for line in path.read_text().splitlines():
                json.loads(line)
        elif path.suffix == ".parquet":
            pq.read_table(path)
        elif path.suffix == ".safetensors":
            load_file(str(path))
        else:
            continue
        checked += 1
    return checked


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _start(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _finish(cmd: list[str], timeout: float = 300) -> float:
    started = time.monotonic()
    res = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    return time.monotonic() - started


def _kill_after_progress(cmd: list[str], out: Path, rng: random.Random, kills: int = 2) -> list[int]:
    """Start ``cmd`` ``kills`` times; each time wait for one more shard, then SIGKILL at a random moment
    within the next batch. Returns the shard count seen after each kill."""
    seen = []
    for _ in range(kills):
        before = len(shard_files(out))
        proc = _start(cmd)
        deadline = time.monotonic() + 120
        while len(shard_files(out)) <= before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, DELAY * 1.5))  # mid-batch, mid-write or between batches
        if proc.poll() is not None:
            pytest.fail(f"{cmd[3]} finished ({proc.returncode}) before it could be killed: {proc.stderr.read()[-2000:]}")
        _kill(proc)
        assert assert_readable(out) >= 1  # the manifest at least
        read_manifest(out)
        load(out)  # the run directory loads after every kill
        seen.append(len(shard_files(out)))
    return seen


def _rows(run: Path) -> dict[str, dict]:
    rows = {r["id"]: r for r in load(run)}
    assert len(rows) == load(run).num_rows, "duplicate ids"
    return rows


@pytest.fixture(scope="module")
def prompts(tmp_path_factory, shared_data) -> Path:
    path = tmp_path_factory.mktemp("prompts") / f"hh-{N_PROMPTS}.jsonl"
    with gzip.open(shared_data / "hh-rlhf-harmless-base-test.jsonl.gz", "rt") as f:
        path.write_text("".join(line for _, line in zip(range(N_PROMPTS), f, strict=False)))
    return path


def _stage_cmd(stage: str, src: Path, out: Path) -> list[str]:
    common = ["--engine", "fake", "--batch-size", BATCH, "--out", out]
    if stage == "generate":
        return _cli("generate", "--prompts", src, "--n", 2, "--temperature", 0, "--max-tokens", 32, *common)
    if stage == "revise":
        return _cli("revise", "--prompts", src, "--constitution", CONSTITUTION, "--rounds", 2, "--temperature", 0,
                    "--max-tokens", 32, *common)
    return _cli("judge", "--input", src, "--constitution", CONSTITUTION, "--principles-per-pair", 2, *common)


@pytest.fixture(scope="module")
def generate_run(tmp_path_factory, prompts) -> Path:
    out = tmp_path_factory.mktemp("gen") / "run"
    _finish(_stage_cmd("generate", prompts, out))
    return out


@pytest.mark.parametrize("stage", ["generate", "revise", "judge"])
def test_sigkill_twice_then_resume_equals_uninterrupted(stage, tmp_path, prompts, generate_run):
    src = generate_run if stage == "judge" else prompts
    rng = random.Random(f"crash-{stage}")
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    seen = _kill_after_progress(_stage_cmd(stage, src, killed), killed, rng)
    assert seen[-1] < N_PROMPTS // BATCH, f"{stage} was not killed mid-run: {seen}"
    _finish(_stage_cmd(stage, src, killed))
    _finish(_stage_cmd(stage, src, clean))
    assert_readable(killed)
    assert not list((killed / "data").glob(".*")), "temp shards left behind after the resume"
    resumed, uninterrupted = _rows(killed), _rows(clean)
    assert len(resumed) == N_PROMPTS
    assert resumed.keys() == uninterrupted.keys()
    assert resumed == uninterrupted  # same content per id, every column
    assert len(read_manifest(killed)["runtimes"]) == 3  # two killed starts and the resume


def test_judge_eval_killed_twice_leaves_nothing_or_everything(tmp_path, shared_data):
    human = shared_data / "hh-rlhf-harmless-base-test.jsonl.gz"

    def cmd(out):
        return _cli("judge-eval", "--human", human, "--limit", N_PROMPTS, "--engine", "fake", "--batch-size", BATCH,
                    "--principles-per-pair", 2, "--out", out)

    clean, killed = tmp_path / "clean", tmp_path / "killed"
    took = _finish(cmd(clean))
    rng = random.Random("crash-judge-eval")
    for _ in range(2):
        proc = _start(cmd(killed))
        time.sleep(rng.uniform(0.3 * took, 0.9 * took))
        if proc.poll() is not None:
            pytest.fail(f"judge-eval finished ({proc.returncode}) before it could be killed")
        _kill(proc)
        if killed.exists():
            # The kill landed after the swap (the process was exiting): the output must then be whole.
            assert assert_readable(killed) >= 2 and (killed / "metrics.json").is_file()
            break
    if not killed.exists():
        _finish(cmd(killed))
    assert assert_readable(killed) >= 2
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (killed, clean))
    for m in (a, b):
        m["settings"].pop("versions", None)
    assert a == b
    assert (killed / "pairs.jsonl").read_text() == (clean / "pairs.jsonl").read_text()


def _sft_cmd(data: Path, model: str, out: Path) -> list[str]:
    return _cli("align", "sft", "--data", data, "--model", model, "--out", out, "--max-steps", 4,
                "--set", "max_length=64", "--set", "trl.save_strategy=steps", "--set", "trl.save_steps=1")


@pytest.mark.timeout(600)
def test_align_sft_killed_at_checkpoints_then_rerun_equals_uninterrupted(tmp_path, prompts, tiny_model_dir):
    from safetensors.torch import load_file

    data = tmp_path / "rev"
    _finish(_stage_cmd("revise", prompts, data))
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    rng = random.Random("crash-align")
    for _ in range(2):
        before = set(tmp_path.glob(".killed.*.tmp"))
        proc = _start(_sft_cmd(data, tiny_model_dir, killed))
        deadline = time.monotonic() + 300
        while not [p for p in tmp_path.glob(".killed.*.tmp/checkpoint-*") if p.parent not in before]:
            assert proc.poll() is None, f"finished before a checkpoint appeared: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        _kill(proc)
        assert not killed.exists(), "a killed training left a visible --out"
        assert_readable(tmp_path)
    _finish(_sft_cmd(data, tiny_model_dir, killed), timeout=600)
    _finish(_sft_cmd(data, tiny_model_dir, clean), timeout=600)
    assert assert_readable(killed) >= 3
    a, b = (load_file(str(d / "model.safetensors")) for d in (killed, clean))
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a)
    assert json.loads((killed / "metrics.json").read_text())["global_step"] == 4
