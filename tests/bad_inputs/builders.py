"""Files the bad-input cases start from that are more than a literal text: run directories of every
stage (whole, empty, or with a truncated shard) and broken parquet files. Each kind is built once
per session into a template folder and copied into each case's folder."""

from __future__ import annotations

import shutil
from pathlib import Path

PROMPT = [{"role": "user", "content": "How do I keep basil alive?"}]


def _finish(writer, rows: list[dict]) -> None:
    writer.write(rows)
    writer.finish()


def generate_run(dest: Path) -> None:
    from generator.records import RESPONSES
    from plumbing.runs import RunWriter

    rows = [{"id": f"g{i}", "prompt": PROMPT, "responses": [f"water it {i}", f"sun {i}"], "model": "fake-model",
             "sampling": "{}"} for i in range(3)]
    _finish(RunWriter(dest, "generate", {"toy": "bad-inputs"}, RESPONSES), rows)


def generate_run_no_rows(dest: Path) -> None:
    from generator.records import RESPONSES
    from plumbing.runs import RunWriter

    _finish(RunWriter(dest, "generate", {"toy": "bad-inputs-empty"}, RESPONSES), [])


def revise_run(dest: Path) -> None:
    from generator.records import REVISIONS
    from plumbing.runs import RunWriter

    rows = [{"id": f"r{i}", "prompt": PROMPT, "messages": [*PROMPT, {"role": "assistant", "content": "revised"}],
             "init_response": "first", "critiques": ["c"], "revisions": ["revised"], "principle_ids": ["p"],
             "model": "fake-model", "constitution_sha256": "0" * 64, "template_sha256": "0" * 64}
            for i in range(3)]
    _finish(RunWriter(dest, "revise", {"toy": "bad-inputs"}, REVISIONS), rows)


def judge_run(dest: Path) -> None:
    from constitution import DEFAULT_PATH, load_constitution
    from judge.records import PREFERENCES
    from plumbing.runs import RunWriter

    sha = load_constitution(DEFAULT_PATH).sha256()
    rows = [{"id": f"j{i}", "prompt": [{"role": "user", "content": f"question {i}"}],
             "chosen": [{"role": "assistant", "content": "good"}],
             "rejected": [{"role": "assistant", "content": "bad"}], "p_chosen": 0.8,
             "votes": [{"principle_id": "harm-general", "order": "ab", "p_a": 0.8, "reason": None}],
             "principle_ids": ["harm-general"], "position_consistent": True, "judge_model": "fake-model",
             "constitution_sha256": sha, "template_sha256": "0" * 64} for i in range(4)]
    _finish(RunWriter(dest, "judge", {"toy": "bad-inputs", "constitution_sha256": sha}, PREFERENCES), rows)


def _truncate_shards(dest: Path) -> None:
    for shard in sorted((dest / "data").glob("*.parquet")):
        data = shard.read_bytes()
        shard.write_bytes(data[: len(data) // 2])


def generate_run_truncated(dest: Path) -> None:
    generate_run(dest)
    _truncate_shards(dest)


def judge_run_truncated(dest: Path) -> None:
    judge_run(dest)
    _truncate_shards(dest)


def prompts_parquet_truncated(dest: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": [f"prompt number {i}" for i in range(200)]}), str(dest))
    data = dest.read_bytes()
    dest.write_bytes(data[: len(data) // 2])


def corrupt_parquet(dest: Path) -> None:
    dest.write_bytes(b"PAR1" + bytes(range(256)) * 8 + b"PAR1")


KINDS = {f.__name__: f for f in (generate_run, generate_run_no_rows, revise_run, judge_run, generate_run_truncated,
                                 judge_run_truncated, prompts_parquet_truncated, corrupt_parquet)}


class Templates:
    """Builds each kind once into ``root`` and copies it on request."""

    def __init__(self, root: Path):
        self.root = root
        self.built: dict[str, Path] = {}

    def build_all(self) -> None:
        for kind in KINDS:
            self.get(kind)

    def get(self, kind: str) -> Path:
        if kind not in self.built:
            path = self.root / kind
            KINDS[kind](path)
            self.built[kind] = path
        return self.built[kind]

    def copy(self, kind: str, dest: Path) -> None:
        src = self.get(kind)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".lock"))
        else:
            shutil.copyfile(src, dest)
