"""``align/data.py``'s held-out rows (``data.eval_ratio``): whole prompts are held out, so no prompt
has pairs on both sides when a run holds several pairs per prompt (`rlaif generate --n` above 2)."""

from __future__ import annotations

import json

import pytest

from align.config import DataSource, RecipeError
from plumbing.hashing import prompt_id

PROMPTS, PAIRS = 10, 4


def _pair(k: int, j: int) -> dict:
    return {"id": f"p{k}-{j}", "prompt": [{"role": "user", "content": f"Question number {k}?"}],
            "chosen": [{"role": "assistant", "content": f"A kind answer {j}."}],
            "rejected": [{"role": "assistant", "content": f"A rude answer {j}."}],
            "p_chosen": 0.6 + 0.01 * j, "votes": [], "principle_ids": ["p"], "position_consistent": True,
            "judge_model": "toy", "constitution_sha256": "c" * 64, "template_sha256": "t" * 64}


@pytest.fixture
def multi_pair_run(tmp_path):
    """A judge run of PROMPTS prompts x PAIRS pairs, the pairs of a prompt in consecutive rows."""
    from judge.records import PREFERENCES
    from plumbing.runs import RunWriter

    writer = RunWriter(tmp_path / "judge", "judge", {"toy": "multi"}, PREFERENCES)
    writer.write([_pair(k, j) for k in range(PROMPTS) for j in range(PAIRS)])
    writer.finish()
    return tmp_path / "judge"


def _ids(ds) -> set[str]:
    return {prompt_id(p) for p in ds["prompt"]}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eval_ratio_holds_out_whole_prompts(multi_pair_run, seed):
    from align.data import load_data

    data = load_data(DataSource(path=str(multi_pair_run), eval_ratio=0.25), "dpo", seed=seed)
    assert len(data.train) + len(data.eval) == PROMPTS * PAIRS
    assert not _ids(data.train) & _ids(data.eval)
    # 10 rows asked for, whole prompts of 4 rows: the first prompts whose rows reach 10, i.e. 3 prompts
    assert len(data.eval) == 3 * PAIRS and len(_ids(data.eval)) == 3


def test_eval_ratio_is_stable_and_seeded(multi_pair_run):
    from align.data import load_data

    def held(seed: int) -> set[str]:
        return _ids(load_data(DataSource(path=str(multi_pair_run), eval_ratio=0.25), "reward", seed=seed).eval)

    assert held(0) == held(0)
    assert len({frozenset(held(s)) for s in range(5)}) > 1


def test_eval_ratio_groups_sft_rows_by_conversation(tmp_path):
    """A dataset file with only ``messages``: the prompt is the conversation before the final reply."""
    from align.data import load_data

    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Question {k}?"},
                                                     {"role": "assistant", "content": f"Answer {j}."}]}) + "\n"
                            for k in range(PROMPTS) for j in range(PAIRS)))
    data = load_data(DataSource(path=str(path), eval_ratio=0.25), "sft", seed=0)

    def ids(ds):
        return {prompt_id(m[:-1]) for m in ds["messages"]}

    assert len(data.train) + len(data.eval) == PROMPTS * PAIRS and data.eval
    assert not ids(data.train) & ids(data.eval)


def test_eval_ratio_with_one_prompt_is_one_clear_error(tmp_path):
    from align.data import load_data
    from judge.records import PREFERENCES
    from plumbing.runs import RunWriter

    writer = RunWriter(tmp_path / "one", "judge", {"toy": "one"}, PREFERENCES)
    writer.write([_pair(0, j) for j in range(PAIRS)])
    writer.finish()
    with pytest.raises(RecipeError, match=r"1 prompt.*no training rows"):
        load_data(DataSource(path=str(tmp_path / "one"), eval_ratio=0.25), "dpo", seed=0)


def test_prompt_id_ignores_none_keys():
    """datasets fills keys missing from some messages with None; the id must not change."""
    msgs = [{"role": "user", "content": "hi"}]
    assert prompt_id(msgs) == prompt_id([{"role": "user", "content": "hi", "name": None}])
    assert prompt_id(msgs) != prompt_id([{"role": "user", "content": "hi!"}])
