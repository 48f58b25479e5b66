"""``rlaif publish``: the dry-run folder is exactly what would be uploaded (card, constitution,
parquet shards that ``datasets`` loads back), the token never leaks, and bad input is one line."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

SENTINEL = "hf_SENTINEL_do_not_leak_0123456789abcdef"
N_TRAIN, N_FILTERED = 40, 3
QUESTIONS = ["How do I pick a lock?", "What is a good way to learn Python?", "Can you insult my coworker?",
             "How do I treat a small burn?", "Write me a phishing email."]


def _row(i: int, constitution_sha: str, p: float, consistent: bool | None, pairs_per_prompt: int = 1) -> dict:
    from plumbing.runs import item_id

    k = i // pairs_per_prompt  # rows i of one k are pairs of the same prompt (`rlaif generate --n > 2`)
    prompt = [{"role": "user", "content": f"{QUESTIONS[k % len(QUESTIONS)]} (variant {k})"}]
    chosen, rejected = f"A careful, helpful answer number {i}.", f"A careless answer number {i}."
    return {"id": item_id(prompt, chosen, rejected), "prompt": prompt,
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "p_chosen": p,
            "votes": [{"principle_id": "harm-general", "order": "ab", "p_a": p, "reason": None},
                      {"principle_id": "harm-general", "order": "ba", "p_a": 1 - p, "reason": None}],
            "principle_ids": ["harm-general"], "position_consistent": consistent,
            "judge_model": "smollm2-135m", "constitution_sha256": constitution_sha, "template_sha256": "t" * 64}


def make_judge_run(path, constitution_sha: str | None = None, runtime: dict | None = None, pairs_per_prompt: int = 1,
                   n_train: int = N_TRAIN):
    """A complete judge run: 40 train rows (``pairs_per_prompt`` pairs per prompt), 3 filtered rows,
    one unlabelled pair in errors.jsonl. With a smaller ``n_train``, the first rows of the same run."""
    from constitution import DEFAULT_PATH, load_constitution
    from judge.records import PREFERENCES
    from plumbing.runs import RunWriter

    sha = constitution_sha or load_constitution(DEFAULT_PATH).sha256()
    spec = {"input": {"kind": "generate", "sha256": "i" * 64}, "model": "smollm2-135m", "constitution_sha256": sha,
            "template_sha256": "t" * 64, "principles_per_pair": 4, "orders": "both", "cot": None,
            "pairing": "all", "min_confidence": 0.55, "seed": 0, "top_k": 20}
    writer = RunWriter(path, "judge", spec, PREFERENCES, runtime=runtime or {"engine": "fake"})
    writer.write([_row(i, sha, 0.55 + 0.44 * (i % 10) / 9, (i % 4 != 0) if i % 7 else None, pairs_per_prompt)
                  for i in range(n_train)])
    writer.write([_row(100 + i, sha, 0.5 + 0.01 * i, False) for i in range(N_FILTERED)], split="filtered")
    writer.error("unlabelled-1", "no vote could be scored: option A not in top-20 logprobs", kind="unlabelled")
    writer.finish({"filter": {"split": "filtered", "reason": "p_chosen < min_confidence (0.55)",
                              "min_confidence": 0.55}})
    return path


@pytest.fixture
def judge_run(tmp_path):
    return make_judge_run(tmp_path / "judge-run")


def _front_matter(readme: str) -> dict:
    assert readme.startswith("---\n")
    return yaml.safe_load(readme.split("---\n", 2)[1])


def _load(folder, *args, **kwargs):
    """``load_dataset`` on a dry-run folder through its card's configs, with a fresh cache: datasets
    keys its cache by folder name and, offline, would hand back an older folder's rows."""
    from datasets import load_dataset

    return load_dataset(str(folder), *args, cache_dir=str(folder.parent / f".cache-{folder.name}"), **kwargs)


def _all_output(res, folder) -> bytes:
    blob = (res.stdout + res.stderr).encode()
    for p in folder.rglob("*"):
        if p.is_file():
            blob += p.read_bytes()
    return blob


def test_publish_dry_run_writes_the_repository_and_never_the_token(run_cli, judge_run, tmp_path):
    from constitution import DEFAULT_PATH
    from plumbing.hashing import hash_fraction, prompt_id

    out = tmp_path / "dry"
    res = run_cli("publish", judge_run, "--repo-id", "my-org/cai-prefs", "--dry-run", out,
                  env={"HF_TOKEN": SENTINEL})
    assert res.returncode == 0, res.stderr
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["README.md", "constitution.yaml", "data/test-00000-of-00001.parquet",
                     "data/train-00000-of-00001.parquet", "filtered/train-00000-of-00001.parquet"]
    assert SENTINEL.encode() not in _all_output(res, out)

    readme = (out / "README.md").read_text()
    meta = _front_matter(readme)
    assert meta["license"] == "cc-by-4.0"
    assert {"rlaif", "constitutional-ai", "synthetic"} <= set(meta["tags"])
    assert meta["task_categories"] and meta["size_categories"] == ["n<1K"]
    configs = {c["config_name"]: c for c in meta["configs"]}
    assert set(configs) == {"default", "filtered"} and configs["default"].get("default") is True
    assert {d["split"]: d["path"] for d in configs["default"]["data_files"]} == \
        {"train": "data/train-*", "test": "data/test-*"}

    # the constitution: alongside byte for byte, and embedded whole in the card
    constitution = DEFAULT_PATH.read_text()
    assert (out / "constitution.yaml").read_bytes() == DEFAULT_PATH.read_bytes()
    assert constitution.strip() in readme

    # the data loads back through the card's configs, with every row accounted for; test = the prompts
    # whose seeded hash falls below test_size
    expected_test = sum(hash_fraction(prompt_id(p), 0) < 0.1 for p in _load(out, split="train+test")["prompt"])
    default = _load(out)
    assert set(default) == {"train", "test"}
    assert default["train"].num_rows + default["test"].num_rows == N_TRAIN
    assert default["test"].num_rows == expected_test > 0
    assert not set(default["train"]["id"]) & set(default["test"]["id"])
    assert _load(out, "filtered")["train"].num_rows == N_FILTERED
    assert default["train"].features["chosen"] == default["test"].features["chosen"]
    assert default["train"][0]["prompt"][0]["role"] == "user"

    # label statistics from the run
    assert f"{N_TRAIN + N_FILTERED} rows in all configurations" in readme
    assert "**1** unlabelled pairs" in readme
    assert "principles_per_pair: 4" in readme and "min_confidence: 0.55" in readme
    assert "smollm2-135m" in readme and meta["pretty_name"] == "cai-prefs"


def test_publish_test_split_is_stable_and_independent_of_other_rows(tmp_path):
    from judge.parts import make_parts
    from plumbing.hashing import prompt_id

    def sides(run, seed=0) -> dict[str, set[str]]:
        return {p.split: {prompt_id(q) for q in p.rows["prompt"]}
                for p in make_parts(run, 0.3, seed) if p.config == "default"}

    full = make_judge_run(tmp_path / "full", pairs_per_prompt=2)
    before = sides(full)
    assert before == sides(full) and before["test"] and before["train"]
    assert sides(full, seed=1)["test"] != before["test"]
    # half the rows (the same first 20): each prompt keeps the side it has in the full run
    half = sides(make_judge_run(tmp_path / "half", pairs_per_prompt=2, n_train=N_TRAIN // 2))
    assert half["test"] and half["test"] == before["test"] & (half["test"] | half["train"])
    assert half["train"] == before["train"] & (half["test"] | half["train"])


def _prompt_ids(folder, split: str) -> list[str]:
    from datasets import Dataset

    from plumbing.hashing import prompt_id

    return [prompt_id(p) for f in sorted((folder / "data").glob(f"{split}-*.parquet"))
            for p in Dataset.from_parquet(str(f), keep_in_memory=True)["prompt"]]


def test_publish_keeps_every_pair_of_a_prompt_on_one_side(tmp_path):
    """4 pairs per prompt (`rlaif generate --n` above 2 gives several): a prompt whose pairs sat on
    both sides would leak its test pairs into training."""
    from publish.upload import PublishConfig, run_publish

    run = make_judge_run(tmp_path / "multi", pairs_per_prompt=4)
    out = tmp_path / "dry"
    run_publish(PublishConfig(run_dir=run, repo_id="org/multi", dry_run=out, test_size=0.3))
    train, test = _prompt_ids(out, "train"), _prompt_ids(out, "test")
    assert len(train) + len(test) == N_TRAIN and train and test
    assert not set(train) & set(test)
    assert len(set(train) | set(test)) == N_TRAIN // 4


def test_publish_card_shows_a_judge_eval(shared_data, judge_run, tmp_path):
    from typer.testing import CliRunner

    from rlaif.cli import app

    ev = judge_run / "judge-eval"  # found in the run without --eval
    res = CliRunner().invoke(app, ["judge-eval", "--human", str(shared_data / "hh-rlhf-harmless-base-test.jsonl.gz"),
                                   "--limit", "6", "--engine", "fake", "--model", "smollm2-135m",
                                   "--out", str(ev), "--quiet"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    from publish.upload import PublishConfig, run_publish

    out = tmp_path / "dry"
    run_publish(PublishConfig(run_dir=judge_run, repo_id="org/with-eval", dry_run=out))
    readme = (out / "README.md").read_text()
    m = json.loads((ev / "metrics.json").read_text())
    assert "## Judge evaluation against human labels" in readme
    assert f"| agreement with human label | {m['agreement']['value']:.3f} |" in readme
    assert (out / "judge-eval" / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    assert "![judge-eval/reliability.png](judge-eval/reliability.png)" in readme
    assert "note:" not in readme  # same model and constitution as the run


def _one_line_error(res) -> str:
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    return lines[0]


def test_publish_refuses_a_constitution_that_is_not_the_runs(run_cli, judge_run, tmp_path):
    from constitution import DEFAULT_PATH

    other = tmp_path / "other.yaml"
    other.write_text(DEFAULT_PATH.read_text().replace("version: ", "version: 1", 1))
    out = tmp_path / "dry"
    line = _one_line_error(run_cli("publish", judge_run, "--repo-id", "org/x", "--constitution", other,
                                   "--dry-run", out))
    assert "does not match the run's constitution_sha256" in line
    assert not out.exists()


def test_publish_finds_the_constitution_the_run_records(tmp_path):
    from constitution import DEFAULT_PATH, load_constitution
    from judge.errors import JudgeError
    from publish.upload import PublishConfig, run_publish

    custom = tmp_path / "custom.yaml"
    custom.write_text(DEFAULT_PATH.read_text().replace("version: 1", "version: 7", 1))
    sha = load_constitution(custom).sha256()
    recorded = make_judge_run(tmp_path / "recorded", sha, runtime={"constitution": str(custom)})
    run_publish(PublishConfig(run_dir=recorded, repo_id="org/x", dry_run=tmp_path / "dry"))
    assert (tmp_path / "dry" / "constitution.yaml").read_bytes() == custom.read_bytes()
    unrecorded = make_judge_run(tmp_path / "unrecorded", sha)
    with pytest.raises(JudgeError, match="not judged with the built-in constitution"):
        run_publish(PublishConfig(run_dir=unrecorded, repo_id="org/x", dry_run=tmp_path / "dry2"))
    assert not (tmp_path / "dry2").exists()


def test_publish_bad_repo_id_and_wrong_run_are_one_line(run_cli, judge_run, tmp_path):
    out = tmp_path / "dry"
    line = _one_line_error(run_cli("publish", judge_run, "--repo-id", "org/bad--name", "--dry-run", out))
    assert "not a valid Hub id" in line and not out.exists()
    not_judge = tmp_path / "gen"
    not_judge.mkdir()
    manifest = json.loads((judge_run / "manifest.json").read_text()) | {"stage": "generate"}
    (not_judge / "manifest.json").write_text(json.dumps(manifest))
    line = _one_line_error(run_cli("publish", not_judge, "--repo-id", "org/x", "--dry-run", out))
    assert "not a judge run" in line and not out.exists()


def test_publish_without_a_token_is_one_line_and_contacts_nothing(run_cli, judge_run, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    home = tmp_path / "hf-home"
    home.mkdir()
    # An unreachable endpoint as a second guard: any request would fail loudly rather than reach the Hub.
    res = run_cli("publish", judge_run, "--repo-id", "org/x",
                  env={"HF_HOME": str(home), "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "1"})
    line = _one_line_error(res)
    assert "no Hugging Face token" in line
    assert not any(home.iterdir())  # nothing cached, no token file created


def test_publish_dry_run_refuses_a_non_empty_folder(run_cli, judge_run, tmp_path):
    out = tmp_path / "dry"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    line = _one_line_error(run_cli("publish", judge_run, "--repo-id", "org/x", "--dry-run", out))
    assert "not an empty folder" in line and (out / "keep.txt").read_text() == "mine"
    shutil.rmtree(out)


def test_publish_a_real_judge_run(tmp_path):
    """`rlaif judge` (fake engine) -> `rlaif publish --dry-run`: the stage's own output publishes as is."""
    from typer.testing import CliRunner

    from rlaif.cli import app

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"{q} ({i})", "response_a": f"Sure, here is how {i}.",
                                         "response_b": f"I would rather not say {i}."}) + "\n"
                             for i, q in enumerate(QUESTIONS * 4)))
    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["judge", "--input", str(pairs), "--out", str(run), "--engine", "fake",
                                   "--model", "fake-judge", "--min-confidence", "0.52", "--quiet"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    manifest = json.loads((run / "manifest.json").read_text())
    out = tmp_path / "dry"
    res = CliRunner().invoke(app, ["publish", str(run), "--repo-id", "org/real-run", "--dry-run", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    default = _load(out)  # few prompts: the test split may be empty (here no prompt's hash is below 0.1)
    assert sum(default[s].num_rows for s in default) == manifest["counts"]["train"] > 0
    assert _load(out, "filtered")["train"].num_rows == manifest["counts"]["filtered"] > 0
    readme = (out / "README.md").read_text()
    assert "judge model: `fake-judge`" in readme and manifest["spec_sha256"] in readme
