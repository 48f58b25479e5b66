"""Run directories: atomic shards, resume keys, spec guard, torn-write tolerance."""

from __future__ import annotations

import json

import pytest
from datasets import Features, Value

from plumbing.runs import RunError, RunWriter, item_id, load, load_all, read_errors, read_manifest, sha256_of

FEATS = Features({"id": Value("string"), "x": Value("int64")})


def _rows(*ids):
    return [{"id": i, "x": n} for n, i in enumerate(ids)]


def test_write_load_and_resume(tmp_path):
    w = RunWriter(tmp_path / "run", "generate", {"model": "m"}, FEATS)
    w.write(_rows("a", "b"))
    w.write(_rows("c"))
    w.error("d", "empty prompt")
    assert w.finish() == {"train": 3, "errors": 1}
    assert read_manifest(tmp_path / "run")["status"] == "complete"
    assert sorted(load(tmp_path / "run")["id"]) == ["a", "b", "c"]
    again = RunWriter(tmp_path / "run", "generate", {"model": "m"}, FEATS)
    assert again.done_ids == {"a", "b", "c", "d"}


def test_changed_spec_refused_unless_overwrite(tmp_path):
    RunWriter(tmp_path, "generate", {"model": "m", "seed": 0}, FEATS).write(_rows("a"))
    with pytest.raises(RunError, match=r"different spec \(changed: seed\).*--overwrite"):
        RunWriter(tmp_path, "generate", {"model": "m", "seed": 1}, FEATS)
    w = RunWriter(tmp_path, "generate", {"model": "m", "seed": 1}, FEATS, overwrite=True)
    assert w.done_ids == set()
    assert load(tmp_path).num_rows == 0


def test_runtime_knobs_do_not_change_the_spec(tmp_path):
    RunWriter(tmp_path, "generate", {"model": "m"}, FEATS, runtime={"batch_size": 8}).write(_rows("a"))
    w = RunWriter(tmp_path, "generate", {"model": "m"}, FEATS, runtime={"batch_size": 64})
    assert w.done_ids == {"a"}


def test_other_stage_and_foreign_folder_refused(tmp_path):
    RunWriter(tmp_path / "r", "generate", {}, FEATS)
    with pytest.raises(RunError, match="holds a 'generate' run"):
        RunWriter(tmp_path / "r", "judge", {}, FEATS)
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not empty"):
        RunWriter(tmp_path / "f", "generate", {}, FEATS)


def test_torn_error_line_and_stale_tmp_shard_are_ignored(tmp_path):
    w = RunWriter(tmp_path, "generate", {}, FEATS)
    w.write(_rows("a"))
    w.error("b", "bad")
    with open(tmp_path / "errors.jsonl", "a") as f:
        f.write('{"id": "c", "rea')  # killed mid-line
    w.close()  # the killed process held the lock; the OS releases it
    (tmp_path / "data" / ".train-00009.parquet.tmp").write_bytes(b"PAR1 half")
    w2 = RunWriter(tmp_path, "generate", {}, FEATS)
    assert w2.done_ids == {"a", "b"}
    assert [e["id"] for e in read_errors(tmp_path)] == ["b"]
    assert not list((tmp_path / "data").glob(".*.tmp"))


def test_splits_and_ids(tmp_path):
    w = RunWriter(tmp_path, "judge", {}, FEATS)
    w.write(_rows("a"), split="train")
    w.write(_rows("b"), split="filtered")
    dd = load_all(tmp_path)
    assert set(dd) == {"train", "filtered"} and dd["filtered"]["id"] == ["b"]
    with pytest.raises(RunError, match="no split 'test'"):
        load(tmp_path, "test")
    assert item_id("x", 1) == item_id("x", 1) != item_id("x", 2)
    assert sha256_of({"a": 1, "b": 2}) == sha256_of(json.loads('{"b": 2, "a": 1}'))


def test_not_a_run_directory(tmp_path):
    with pytest.raises(RunError, match="not a run directory"):
        load(tmp_path)


def test_a_start_killed_before_its_first_manifest_leaves_a_usable_folder(tmp_path):
    """Old layout: a kill between mkdir data/ and the first manifest left a folder the next run refused.
    Now the manifest comes first; and the old state (an empty data/, a lock) still counts as empty."""
    out = tmp_path / "run"
    (out / "data").mkdir(parents=True)
    (out / ".lock").write_text("")
    w = RunWriter(out, "generate", {"model": "m"}, FEATS)
    w.write(_rows("a"))
    w.finish()
    assert load(out)["id"] == ["a"]
    fresh = tmp_path / "fresh"
    w = RunWriter(fresh, "generate", {"model": "m"}, FEATS)
    assert read_manifest(fresh)["status"] == "running" and (fresh / "data").is_dir()
    w.close()


def test_a_torn_error_line_is_cut_so_the_next_record_starts_its_own_line(tmp_path):
    w = RunWriter(tmp_path, "generate", {}, FEATS)
    w.error("b", "bad")
    w.close()
    with open(tmp_path / "errors.jsonl", "a") as f:
        f.write('{"id": "c", "rea')  # killed mid-line
    w = RunWriter(tmp_path, "generate", {}, FEATS)
    w.error("d", "also bad")
    w.close()
    lines = (tmp_path / "errors.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["b", "d"]  # "d" did not glue onto the torn "c"


def test_duplicate_ids_in_one_batch_are_written_once(tmp_path):
    w = RunWriter(tmp_path, "generate", {}, FEATS)
    w.write([{"id": "a", "x": 1}, {"id": "a", "x": 2}, {"id": "b", "x": 3}])
    w.write([{"id": "b", "x": 4}])  # already done: dropped, no empty shard
    w.finish()
    ds = load(tmp_path)
    assert ds["id"] == ["a", "b"] and ds["x"] == [1, 3]


def test_a_second_writer_on_the_same_run_is_refused_in_one_line(tmp_path):
    import subprocess
    import sys

    w = RunWriter(tmp_path, "generate", {}, FEATS)
    with pytest.raises(RunError, match="being written by another rlaif process"):
        RunWriter(tmp_path, "generate", {}, FEATS)
    code = ("from datasets import Features, Value; from plumbing.runs import RunWriter; "
            f"RunWriter({str(tmp_path)!r}, 'generate', {{}}, Features({{'id': Value('string'), 'x': Value('int64')}}))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert other.returncode != 0 and "being written by another rlaif process" in other.stderr
    w.close()
    RunWriter(tmp_path, "generate", {}, FEATS).close()  # free again once the first writer is done


def test_runtimes_are_appended_across_resumes(tmp_path):
    RunWriter(tmp_path, "generate", {"model": "m"}, FEATS, runtime={"batch_size": 8}).finish()
    RunWriter(tmp_path, "generate", {"model": "m"}, FEATS, runtime={"batch_size": 64}).finish()
    runtimes = read_manifest(tmp_path)["runtimes"]
    assert [r["batch_size"] for r in runtimes] == [8, 64] and all("started" in r for r in runtimes)


def test_overwrite_replaces_only_a_run_of_the_same_stage(tmp_path):
    mine = tmp_path / "mine"
    (mine / "data").mkdir(parents=True)
    (mine / "data" / "thesis.parquet").write_bytes(b"precious")
    (mine / "errors.jsonl").write_text("my notes\n")
    with pytest.raises(RunError, match="not an rlaif run directory"):
        RunWriter(mine, "generate", {}, FEATS, overwrite=True)
    assert (mine / "data" / "thesis.parquet").read_bytes() == b"precious"
    RunWriter(tmp_path / "judged", "judge", {}, FEATS).finish()
    with pytest.raises(RunError, match="holds a 'judge' run"):
        RunWriter(tmp_path / "judged", "generate", {}, FEATS, overwrite=True)
    for bad in ("", "."):
        with pytest.raises(RunError, match="folder of its own"):
            RunWriter(bad, "generate", {}, FEATS, overwrite=True)
