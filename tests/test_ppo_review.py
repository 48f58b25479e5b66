"""PPO's reward pass against a reward model whose tokenizer has the policy's vocabulary but its own chat
template (as ``rlaif align reward`` saves it: the tokenizer of the model it started from).

TRL's RewardTrainer rendered every training row with the reward model's own tokenizer, so that is the text
the score means something on (align/reward_scoring.py); TRL's GRPOTrainer reads a reward model through
its own tokenizer too (``reward_processing_classes``). PPO must score the same conversation the same way,
or refuse the pair before training.
"""

from __future__ import annotations

import json

import pytest
import torch

# the embedded template without its default system turn: same vocabulary, other rendering
PLAIN_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                  "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                  "{% endif %}")


@torch.no_grad()
def _score(rm, tokenizer, prompt: list[dict], text: str) -> float:
    ids = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": text}], tokenize=True,
                                        return_dict=True)["input_ids"]
    return float(rm(input_ids=torch.tensor([list(ids)]), use_cache=False).logits[0, 0])


def test_ppo_reads_the_reward_model_through_its_own_chat_template(tiny_model_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from align import build_recipe
    from align.ppo import trainer
    from align.ppo.data import load_prompts
    from align.ppo.rollout import make_batch
    from plumbing.recipes import RecipeError

    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    rm.config.pad_token_id = AutoTokenizer.from_pretrained(tiny_model_dir).pad_token_id
    rm.score.weight.data.normal_()  # weights of order 1: a different text shows in the score
    rm_tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rm_tok.chat_template = PLAIN_TEMPLATE
    rm.save_pretrained(tmp_path / "rm")
    rm_tok.save_pretrained(tmp_path / "rm")
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"prompt": "Say something."}) + "\n")
    recipe = build_recipe("ppo", {"model": tiny_model_dir, "data": {"path": str(tmp_path / "prompts.jsonl")},
                                  "reward_model": str(tmp_path / "rm"), "output_dir": str(tmp_path / "out"),
                                  "max_new_tokens": 4, "normalize_reward": False, "missing_eos_penalty": 0.0,
                                  "quiet": True, "seed": 0})
    try:
        ctx = trainer.setup(recipe)
    except RecipeError as e:  # refusing a reward model whose template differs is a fix too
        assert "template" in str(e)
        return
    trainer.prepare(ctx)
    rows = load_prompts(recipe).train[:1]
    _, stats = make_batch(ctx, rows, [trainer.row_seed(0, 0, 0)])

    reader = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    text, prompt = stats["sample"], rows[0]["prompt"]
    trained_way = _score(reader, AutoTokenizer.from_pretrained(tmp_path / "rm"), prompt, text)
    policy_way = _score(reader, AutoTokenizer.from_pretrained(tiny_model_dir), prompt, text)
    assert abs(trained_way - policy_way) > 0.1  # the two renderings differ, so the test can fail
    assert stats["reward_mean"] == pytest.approx(trained_way, abs=1e-4)
