"""`rlaif align` outputs: refused before anything loads, written whole or not at all (align/output.py).

Every refusal goes through the real CLI in a subprocess and must end with exit code 2, exactly one
line on stderr, no traceback, and every file that existed before byte-identical afterwards. Where
the refusal must come before the data is read, ``--data`` names a folder that does not exist (had
the data been read first, the line would be about the data); the model is always a folder that
does not exist unless the model is what is tested.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import BASE_ENV

from bench.align import write_toy_preference_run

ROOT = Path(__file__).resolve().parents[1]
NO_MODEL = "/nonexistent/rlaif-test-model"
NO_DATA = "/nonexistent/rlaif-test-run"


def snapshot(*roots: Path) -> dict[str, bytes]:
    """Every file under ``roots`` (or the file itself) -> its bytes."""
    out = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        out.update({str(p): p.read_bytes() for p in files})
    return out


@pytest.fixture(scope="module")
def judge_run(tmp_path_factory) -> Path:
    return write_toy_preference_run(tmp_path_factory.mktemp("outs") / "judge", n=8)


@pytest.fixture(scope="module")
def dpo_output(tmp_path_factory, judge_run, tiny_model_dir) -> Path:
    """A real `rlaif align dpo` output (one step on the tiny model), made through align.run."""
    import align
    from align import build_recipe

    out = tmp_path_factory.mktemp("outs") / "dpo"
    align.run(build_recipe("dpo", {"model": tiny_model_dir, "data": str(judge_run), "output_dir": str(out),
                                   "max_steps": 1, "max_length": 64, "quiet": True}))
    return out


def refused(run_cli, *args: str, env: dict | None = None, keep: tuple[Path, ...] = ()) -> str:
    before = snapshot(*keep)
    start = time.monotonic()
    res = run_cli("align", *args, timeout=300, env=env)
    elapsed = time.monotonic() - start
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and len(lines) == 1, res.stderr[-3000:]
    assert snapshot(*keep) == before
    assert elapsed < 120, elapsed  # no model load, no Hub retries (a generous bound: the box is shared)
    return lines[0]


@pytest.mark.parametrize("steps", ["0", "-5"])
def test_max_steps_zero_or_negative_is_refused(run_cli, judge_run, tmp_path, steps):
    out = tmp_path / "o"
    line = refused(run_cli, "dpo", "--data", NO_DATA, "--model", NO_MODEL, "--out", str(out), "--max-steps", steps,
                   keep=(judge_run,))
    assert "'--max-steps'" in line and "greater than or equal to 1" in line, line  # the flag's range, said before the recipe
    assert not out.exists()


def test_out_that_is_a_file_is_refused(run_cli, tmp_path):
    out = tmp_path / "model.bin"
    out.write_bytes(b"\x00user weights\xff")
    line = refused(run_cli, "dpo", "--data", NO_DATA, "--model", NO_MODEL, "--out", str(out), keep=(out,))
    assert str(out) in line and "is a file" in line, line


def test_out_that_is_a_users_folder_is_refused(run_cli, tmp_path):
    out = tmp_path / "mine"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("keep me\n")
    (out / "sub" / "x.bin").write_bytes(b"\x01\x02")
    for extra in ([], ["--overwrite"]):  # --overwrite never replaces a folder of the user's
        line = refused(run_cli, "sft", "--data", NO_DATA, "--model", NO_MODEL, "--out", str(out), *extra, keep=(out,))
        assert str(out) in line and "not empty" in line, line


def test_out_of_another_method_is_refused(run_cli, dpo_output, tmp_path):
    out = tmp_path / "dpo-model"
    shutil.copytree(dpo_output, out)
    assert json.loads((out / "manifest.json").read_text())["stage"] == "align-dpo"
    line = refused(run_cli, "reward", "--data", NO_DATA, "--model", NO_MODEL, "--out", str(out), "--overwrite",
                   keep=(out,))
    assert "'align-dpo'" in line and "align-reward" in line, line


def test_out_of_the_same_method_needs_overwrite(run_cli, dpo_output, tmp_path):
    out = tmp_path / "dpo-model"
    shutil.copytree(dpo_output, out)
    line = refused(run_cli, "dpo", "--data", NO_DATA, "--model", NO_MODEL, "--out", str(out), keep=(out,))
    assert "align-dpo" in line and "--overwrite" in line, line


def test_overwrite_replaces_an_output_of_the_same_method(run_cli, dpo_output, judge_run, tiny_model_dir, tmp_path):
    out = tmp_path / "dpo-model"
    shutil.copytree(dpo_output, out)
    (out / "stale.txt").write_text("from the old model\n")
    old = json.loads((out / "manifest.json").read_text())
    res = run_cli("align", "dpo", "--data", str(judge_run), "--model", tiny_model_dir, "--out", str(out),
                  "--max-steps", "2", "--set", "max_length=64", "--overwrite", "--quiet", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not (out / "stale.txt").exists()  # replaced as a whole, not merged
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 2
    assert json.loads((out / "manifest.json").read_text())["updated"] >= old["updated"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dpo-model"]  # nothing left beside it


def test_a_killed_run_leaves_the_old_output_untouched(dpo_output, judge_run, tiny_model_dir, tmp_path):
    """SIGKILL just after the new weights were written (before the rename): --out is byte-identical."""
    out = tmp_path / "dpo-model"
    shutil.copytree(dpo_output, out)
    before = snapshot(out)
    cmd = [sys.executable, "-m", "rlaif", "align", "dpo", "--data", str(judge_run), "--model", tiny_model_dir,
           "--out", str(out), "--max-steps", "1", "--set", "max_length=64", "--overwrite", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 600
    try:
        while not list(tmp_path.glob(".dpo-model.*.tmp/model.safetensors")):
            assert proc.poll() is None, f"finished before it could be killed:\n{proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline
            time.sleep(0.005)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert snapshot(out) == before
    assert not list(tmp_path.glob(".dpo-model.replaced-*"))


def test_failure_after_partial_writes_leaves_no_output(judge_run, tiny_model_dir, tmp_path, monkeypatch):
    """An error after the weights were saved (here: drawing the curve) leaves no --out and no temp folder."""
    import align
    import align.card
    from align import build_recipe

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(align.card, "plot_curve", broken)
    out = tmp_path / "new"
    recipe = build_recipe("dpo", {"model": tiny_model_dir, "data": str(judge_run), "max_steps": 1,
                                  "output_dir": str(out), "quiet": True, "max_length": 64})
    with pytest.raises(RuntimeError, match="disk full"):
        align.run(recipe)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE=1", "online"])
def test_unknown_model_fails_at_once(run_cli, judge_run, tmp_path, offline):
    out = tmp_path / "o"
    env = {**BASE_ENV}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("TRANSFORMERS_OFFLINE", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "rlaif", "align", "dpo", "--data", str(judge_run), "--model",
                          "no-such-model", "--out", str(out), "--max-steps", "1"], capture_output=True, text=True,
                         timeout=300, env=env, cwd=str(ROOT))
    elapsed = time.monotonic() - start
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and "Traceback" not in res.stderr and len(lines) == 1, res.stderr[-3000:]
    assert "no-such-model" in lines[0] and "embedded name (smollm2-135m)" in lines[0], lines[0]
    if offline:
        assert "HF_HUB_OFFLINE" in lines[0], lines[0]
    assert not out.exists()
    assert elapsed < 120, elapsed  # a generous bound (shared box); the check's own time is tested below


def test_model_check_answers_within_its_timeout(monkeypatch):
    """No Hub retries: offline the answer needs no network; online it is one request of at most 10 s."""
    import huggingface_hub

    from align.card import check_model
    from align.config import RecipeError

    for offline in (True, False):
        monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda offline=offline: offline)
        start = time.monotonic()
        with pytest.raises(RecipeError, match="no-such-model"):
            check_model("no-such-model", hub_timeout_s=5)
        assert time.monotonic() - start < 7
    assert check_model("smollm2-135m") == "embedded"


def test_model_folders_are_checked(tmp_path, tiny_model_dir):
    from align.card import check_model
    from align.config import RecipeError

    assert check_model(tiny_model_dir) == "folder"
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    assert check_model(str(tmp_path / "adapter")) == "folder"  # a PEFT adapter folder is a model too
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecipeError, match="no config.json"):
        check_model(str(tmp_path / "empty"))
    with pytest.raises(RecipeError, match="not an embedded name, a local folder or a valid Hub id"):
        check_model("bad name!")
