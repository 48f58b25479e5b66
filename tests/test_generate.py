"""generate / revise stage logic on the fake engine, through the real CLI."""

from __future__ import annotations

import gzip
import json

import pyarrow.parquet as pq
import pytest

from plumbing.inputs import hh_split, read_prompts, to_messages
from plumbing.runs import load, read_errors, read_manifest, shard_files


def test_hh_transcript_prompt_is_conversation_before_last_reply():
    conv, last = hh_split("\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant: fine")
    assert [m["role"] for m in conv] == ["user", "assistant", "user"]
    assert conv[-1]["content"] == "how are you?" and last == "fine"
    assert to_messages("plain question") == [{"role": "user", "content": "plain question"}]
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert to_messages(msgs) == msgs[:1]


def test_read_prompts_formats(tmp_path):
    rows = [{"prompt": "one"}, {"prompt": "two"}, {"prompt": "one"}]
    (tmp_path / "p.jsonl").write_text("\n".join(map(json.dumps, rows)))
    (tmp_path / "p.csv").write_text("prompt\none\ntwo\none\n")
    (tmp_path / "p.json").write_text(json.dumps(rows))
    pq.write_table(__import__("pyarrow").Table.from_pylist(rows), tmp_path / "p.parquet")
    with gzip.open(tmp_path / "p.jsonl.gz", "wt") as f:
        f.write("\n".join(map(json.dumps, rows)))
    ids = None
    for name in ("p.jsonl", "p.csv", "p.json", "p.parquet", "p.jsonl.gz"):
        items = list(read_prompts(tmp_path / name))
        got = [i.id for i in items]
        assert len(set(got)) == 3, name  # a repeated prompt stays a distinct item
        ids = ids or got
        assert got == ids, name  # ids depend on content only, not on the file format


def _prompts_file(tmp_path, shared_data, n=16):
    rows = []
    with gzip.open(shared_data / "hh-rlhf-harmless-base-test.jsonl.gz", "rt") as f:
        for line in f:
            rows.append(line)
            if len(rows) == n:
                break
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(rows) + "\n".join([
        json.dumps({"chosen": "\n\nHuman:   \n\nAssistant: empty"}),
        "{not json",
        json.dumps({"chosen": "\n\nHuman: " + "word " * 3000 + "\n\nAssistant: long"}),
    ]) + "\n")
    return path


def test_generate_fake_engine_writes_rows_errors_and_resumes(tmp_path, shared_data, run_cli):
    prompts = _prompts_file(tmp_path, shared_data)
    out = tmp_path / "run"
    args = ["generate", "--prompts", prompts, "--out", out, "--engine", "fake", "--n", "2", "--max-tokens", "32",
            "--batch-size", "5", "--quiet"]
    res = run_cli(*args, check=True)
    assert "16 train" in res.stdout and "3 errors" in res.stdout
    ds = load(out)
    assert ds.num_rows == 16 and all(len(r) == 2 for r in ds["responses"])
    assert ds[0]["prompt"][-1]["role"] == "user"
    reasons = sorted(e["reason"].split(":")[-1].strip()[:20] for e in read_errors(out))
    assert any("empty prompt" in e["reason"] for e in read_errors(out))
    assert any("invalid JSON" in e["reason"] for e in read_errors(out))
    assert any("exceeds the model context" in e["reason"] for e in read_errors(out)), reasons
    manifest = read_manifest(out)
    assert manifest["status"] == "complete" and manifest["counts"] == {"train": 16, "errors": 3}
    shards = shard_files(out)
    # re-run: nothing left to do, nothing rewritten
    run_cli(*args, check=True)
    assert shard_files(out) == shards
    # a changed spec is refused with one line, then accepted with --overwrite
    res = run_cli(*args[:-1], "--seed", "1", "--quiet")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "--overwrite" in res.stderr
    assert "Traceback" not in res.stderr
    run_cli(*args, "--seed", "1", "--overwrite", check=True)
    assert load(out).num_rows == 16


def test_generate_bad_input_one_line(tmp_path, run_cli):
    res = run_cli("generate", "--prompts", tmp_path / "missing.jsonl", "--out", tmp_path / "o", "--engine", "fake")
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and "missing.jsonl" in res.stderr
    (tmp_path / "x.txt").write_text("hello")
    res = run_cli("generate", "--prompts", tmp_path / "x.txt", "--out", tmp_path / "o", "--engine", "fake")
    assert res.returncode == 2 and "unknown file type" in res.stderr and "Traceback" not in res.stderr
    (tmp_path / "bin.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    res = run_cli("generate", "--prompts", tmp_path / "bin.jsonl", "--out", tmp_path / "o2", "--engine", "fake")
    assert res.returncode == 2 and "not UTF-8" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "o2" / "data").exists() or not list((tmp_path / "o2" / "data").iterdir())


def test_revise_fake_engine_records(tmp_path, shared_data, run_cli):
    from constitution import DEFAULT_PATH, load_constitution

    prompts = _prompts_file(tmp_path, shared_data, n=6)
    out = tmp_path / "rev"
    run_cli("revise", "--prompts", prompts, "--out", out, "--constitution", DEFAULT_PATH, "--rounds", "3",
            "--engine", "fake", "--max-tokens", "40", "--quiet", check=True)
    ds = load(out)
    assert ds.num_rows == 6
    const = load_constitution(DEFAULT_PATH)
    for row in ds:
        assert len(row["critiques"]) == len(row["revisions"]) == len(row["principle_ids"]) == 3
        assert row["messages"] == row["prompt"] + [{"role": "assistant", "content": row["revisions"][-1]}]
        assert all(const.principle(pid) for pid in row["principle_ids"])
        assert row["constitution_sha256"] == const.sha256()
    manifest = read_manifest(out)
    assert manifest["stage"] == "revise" and manifest["spec"]["rounds"] == 3


def test_resuming_with_another_engine_or_model_is_refused_and_runtimes_are_kept(tmp_path):
    """The engine kind and the model served are provenance: part of the spec, so a resume with
    either changed is refused like any spec change; batch size stays a runtime knob."""
    from generator.engines.fake import FakeEngine
    from generator.generate import GenerateConfig, run_generate
    from plumbing.runs import RunError

    class OtherKind(FakeEngine):
        name = "other"

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(f'{{"prompt": "question {i}"}}\n' for i in range(6)))
    out = tmp_path / "run"
    config = GenerateConfig(prompts=prompts, out=out, limit=3)
    run_generate(config, engine=FakeEngine("model-a"))
    with pytest.raises(RunError, match=r"changed: model"):
        run_generate(config.model_copy(update={"limit": None}), engine=FakeEngine("model-b"))
    with pytest.raises(RunError, match=r"changed: engine"):
        run_generate(config.model_copy(update={"limit": None}), engine=OtherKind("model-a"))
    bigger = config.model_copy(update={"limit": None, "engine": config.engine.model_copy(update={"batch_size": 2})})
    run_generate(bigger, engine=FakeEngine("model-a"))
    manifest = read_manifest(out)
    assert manifest["spec"]["engine"] == "fake" and manifest["spec"]["model"] == "model-a"
    assert [r["batch_size"] for r in manifest["runtimes"]] == [32, 2]
    assert all(r["served"]["path"] is None for r in manifest["runtimes"])  # the fake engine loads no folder
    assert set(load(out)["model"]) == {"model-a"}


def test_seed_is_in_the_spec_and_changes_the_samples(tmp_path):
    from generator.engines.fake import FakeEngine
    from generator.generate import GenerateConfig, run_generate

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "question"}\n')
    texts = {}
    for seed in (0, 7):
        out = tmp_path / f"s{seed}"
        run_generate(GenerateConfig(prompts=prompts, out=out, seed=seed), engine=FakeEngine())
        assert read_manifest(out)["spec"]["sampling"]["seed"] == seed
        texts[seed] = load(out)["responses"]
    assert texts[0] != texts[7]
