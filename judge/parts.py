"""The parts of a published judge run: which rows go to which (config, split), and their parquet shards.

The run's ``train`` split becomes the default config's ``train``/``test``; every other split of the
run (e.g. ``filtered``) becomes a config of its own with one ``train`` split. The test split is drawn
by prompt, never by row: a prompt is in test when ``hash_fraction(prompt_id(prompt), seed) <
test_size`` (``plumbing/hashing.py``), so every pair of one prompt lands on the same side (a run made
with ``rlaif generate --n`` above 2 holds several pairs per prompt;
tests/test_publish.py::test_publish_keeps_every_pair_of_a_prompt_on_one_side), and a prompt keeps its
side when the dataset is published again with more rows
(tests/test_publish.py::test_publish_test_split_is_stable_and_independent_of_other_rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from judge.errors import JudgeError
from plumbing.hashing import hash_fraction, prompt_id


@dataclass(frozen=True)
class Part:
    """One (config, split) of the repository: its rows and where its shards go."""

    config: str
    split: str
    data_dir: str
    rows: object  # datasets.Dataset


def in_test(prompt: list[dict], seed: int, test_size: float) -> bool:
    """Stable membership: the prompt's id hash, not the row's id or position, decides."""
    return hash_fraction(prompt_id(prompt), seed) < test_size


def make_parts(run_dir: Path, test_size: float, seed: int) -> list[Part]:
    """train -> default config's train/test (by prompt); every other split of the run -> its own config."""
    from plumbing.runs import load_all

    parts = []
    for split, ds in load_all(run_dir).items():
        if split == "train":
            mask = [in_test(p, seed, test_size) for p in ds["prompt"]]
            for name, keep in (("train", False), ("test", True)):
                sub = ds.select([k for k, m in enumerate(mask) if m == keep])
                if len(sub):  # an empty parquet shard has no schema that datasets can read back
                    parts.append(Part("default", name, "data", sub))
        elif len(ds):
            parts.append(Part(split, "train", split, ds))
    if not parts:
        raise JudgeError(f"{run_dir}: the judge run holds no rows; nothing to publish")
    return sorted(parts, key=lambda p: p.config != "default")  # the default config first, as the Hub lists it


def write_shards(part: Part, folder: Path) -> list[str]:
    """Parquet shards as ``push_to_hub`` names and sizes them (datasets.config.MAX_SHARD_SIZE)."""
    from datasets import config as ds_config
    from datasets.utils.py_utils import convert_file_size_to_int

    nbytes = part.rows._estimate_nbytes()
    num_shards = int(nbytes / convert_file_size_to_int(ds_config.MAX_SHARD_SIZE)) + 1
    (folder / part.data_dir).mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(num_shards):
        name = f"{part.data_dir}/{part.split}-{index:05d}-of-{num_shards:05d}.parquet"
        part.rows.shard(num_shards=num_shards, index=index, contiguous=True).to_parquet(str(folder / name))
        names.append(name)
    return names
