"""Every shipped recipe trains one step on real run directories, through ``align.run`` as users run it.

The runs have the splits the real stages write (a judge run: ``train`` + ``filtered``, no ``test``;
a revise run: ``train``; a gsm8k run of ``rlaif data gsm8k``: ``train``), in the schemas of
judge/records.py, generator/records.py and tasks/build.py. The only overrides make a recipe CPU-tiny:
the tiny random model of tests/conftest.py, one step, no bf16 or DeepSpeed, and the data path (GRPO:
generation by transformers, 16-token completions); every other key (splits, eval_ratio, batch sizes, TRL options) is the
recipe's own, so a recipe that names a split no run has fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (ROOT / "recipes").glob("*.yaml") if not p.name.startswith("pipeline-"))  # `rlaif run` recipes: tests/test_pipeline.py
PROMPTS = 24  # x 2 pairs each: enough rows for a 16-row step and a held-out slice of whole prompts


def _prompt(i: int) -> list[dict]:
    return [{"role": "user", "content": f"How do I look after a {['cat', 'fern', 'bike', 'lamp'][i % 4]} ({i})?"}]


@pytest.fixture(scope="module")
def judge_run(tmp_path_factory) -> str:
    """A judge run as `rlaif judge` writes it: confident pairs in ``train``, the rest in ``filtered``."""
    from judge.records import PREFERENCES
    from plumbing.runs import RunWriter, item_id

    out = tmp_path_factory.mktemp("recipes") / "judge"
    writer = RunWriter(out, "judge", {"toy": "recipes"}, PREFERENCES)

    def pair(i: int, k: int, p: float) -> dict:
        vote = {"principle_id": "harm-general", "order": "ab", "p_a": p, "reason": None}
        return {"id": item_id("recipes", i, k), "prompt": _prompt(i),
                "chosen": [{"role": "assistant", "content": f"Gently, step {k}: keep it clean and safe."}],
                "rejected": [{"role": "assistant", "content": f"Whatever {k}, break it."}],
                "p_chosen": p, "votes": [vote, {**vote, "order": "ba"}], "principle_ids": ["harm-general"],
                "position_consistent": True, "judge_model": "toy-judge", "constitution_sha256": "c" * 64,
                "template_sha256": "t" * 64}

    writer.write([pair(i, k, 0.6 + 0.015 * i) for i in range(PROMPTS) for k in range(2)], split="train")
    writer.write([pair(PROMPTS + i, 0, 0.52) for i in range(4)], split="filtered")
    writer.finish({"filter": {"split": "filtered", "reason": "p_chosen < min_confidence (0.55)"}})
    return str(out)


@pytest.fixture(scope="module")
def revise_run(tmp_path_factory) -> str:
    from generator.records import REVISIONS
    from plumbing.runs import RunWriter, item_id

    out = tmp_path_factory.mktemp("recipes") / "revise"
    writer = RunWriter(out, "revise", {"toy": "recipes"}, REVISIONS)
    writer.write([{"id": item_id("revise", i), "prompt": _prompt(i),
                   "messages": [*_prompt(i), {"role": "assistant", "content": "Gently and safely, like this."}],
                   "init_response": "Break it.", "critiques": ["harmful"], "revisions": ["Gently and safely, like this."],
                   "principle_ids": ["harm-general"], "model": "toy", "constitution_sha256": "c" * 64,
                   "template_sha256": "t" * 64} for i in range(2 * PROMPTS)])
    writer.finish()
    return str(out)


@pytest.fixture(scope="module")
def gsm8k_run(tmp_path_factory) -> str:
    """A `rlaif data gsm8k` run of easy sums, written by tasks/build.py as the command does."""
    from tasks.build import import_task

    folder = tmp_path_factory.mktemp("recipes")
    rows = [{"question": f"What is {i} + {i + 1}?", "answer": f"{i} + {i + 1} = {2 * i + 1}\n#### {2 * i + 1}"}
            for i in range(PROMPTS)]
    (folder / "sums.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    import_task(folder / "sums.jsonl", folder / "gsm8k", "gsm8k")
    return str(folder / "gsm8k")


def test_every_recipe_declares_its_method():
    assert len(RECIPES) >= 8
    for path in RECIPES:
        assert yaml.safe_load(path.read_text()).get("method") in ("sft", "reward", "dpo", "grpo", "ppo"), path.name


@pytest.fixture(scope="module")
def tiny_reward_model(tiny_model_dir, tmp_path_factory) -> str:
    """The tiny model as a 1-output sequence classifier, saved as `rlaif align reward` saves one (PPO recipes)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("recipes") / "rm"
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    model.config.pad_token_id = AutoTokenizer.from_pretrained(tiny_model_dir).pad_token_id
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return str(out)


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_trains_one_step_on_a_real_run(path, tiny_model_dir, judge_run, revise_run, gsm8k_run, tmp_path,
                                              request):
    import align
    from align import load_recipe

    method = yaml.safe_load(path.read_text())["method"]
    out = tmp_path / "model"
    data = {"sft": revise_run, "grpo": gsm8k_run}.get(method, judge_run)
    tiny = ["use_vllm=false", "max_completion_length=16"] if method == "grpo" else []
    trl = ["trl.bf16=false", "trl.deepspeed="]
    if method == "ppo":  # align/ppo is not TRL: its own fields, and a reward model with the tiny tokenizer
        trl = ["bf16=false", "max_new_tokens=8", "num_ppo_epochs=1",
               f"reward_model={request.getfixturevalue('tiny_reward_model')}"]
    recipe = load_recipe(method, path, [f"model={tiny_model_dir}", f"data.path={data}", f"output_dir={out}",
                                        "max_steps=1", "quiet=true", *trl, *tiny])
    metrics = align.run(recipe)
    held_out = "eval_reward" if method == "ppo" else "eval_loss"
    assert metrics["global_step"] == 1 and held_out in metrics["eval"], metrics.get("eval")
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 1
    assert json.loads((out / "manifest.json").read_text())["stage"] == f"align-{method}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp folder left beside it
    (tmp_path / "plain").mkdir()
    assert out.stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777  # not mkdtemp's 0700
