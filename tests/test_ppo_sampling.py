"""PPO's rollouts and reward on a tiny random Llama with the embedded tokenizer and chat template.

- Sampling: a checkpoint's own generation_config (repetition_penalty, no_repeat_ngram_size, top_k) must
  not reach the rollouts: every sampled token is argmax(z / T + G) of the policy's logits z, with the
  Gumbel noise G of the seeding formula in align/ppo/models.py, recomputed here by hand.
- Reward: PPO reads the reward model where ``rlaif align reward`` (TRL's RewardTrainer) trained it to
  score, for the same conversation: the training forward and PPO's reward pass give the same score.
"""

from __future__ import annotations

import json

import pytest
import torch

from align.ppo import core
from align.ppo.models import position_ids, reward_scores, sample
from align.ppo.rollout import encode_prompts

PROMPTS = [[{"role": "user", "content": "Say something."}],
           [{"role": "user", "content": "Tell me a long story about cats, please."}]]
REPLIES = ["Cats nap in the sun.", "Once there was a cat who read every book in the house."]


def gumbel(seed: int, t: int, vocab: int) -> torch.Tensor:
    """G of step ``t`` for the response seeded by ``seed`` (the formula of GumbelSampler)."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + t) % (2**63 - 1))
    u = torch.rand(vocab, generator=g, dtype=torch.float64).clamp_(1e-20, 1.0 - 1e-16)
    return (-torch.log(-torch.log(u))).float()


@torch.no_grad()
def sample_by_hand(policy, prompt_ids, prompt_mask, seeds, n: int, temperature: float, eos: int, pad: int):
    """One row at a time, one full forward per token, no cache, no logits processor of transformers."""
    rows = []
    for row, seed in enumerate(seeds):
        ids, mask, tokens = prompt_ids[row:row + 1], prompt_mask[row:row + 1], []
        for t in range(n):
            z = policy(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits[0, -1].float()
            token = int((z / temperature + gumbel(seed, t, z.shape[0])).argmax())
            tokens.append(token)
            if token == eos:
                break
            ids, mask = torch.cat([ids, torch.tensor([[token]])], 1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        rows.append(tokens + [pad] * (n - len(tokens)))
    return torch.tensor(rows)


def test_rollouts_ignore_the_checkpoints_generation_config(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    shipped = policy.generation_config
    shipped.repetition_penalty, shipped.no_repeat_ngram_size, shipped.top_k = 1.3, 2, 5  # as Qwen2.5-Instruct ships
    prompt_ids, prompt_mask = encode_prompts(tok, PROMPTS, None, "cpu")
    # The tiny model's logits have std ~0.16; at T = 0.1 they weigh as much as the noise, so the hand-drawn
    # tokens repeat (below), which the shipped penalty and 2-gram ban would have changed.
    seeds, n, temperature = [11, 12], 16, 0.1
    got = sample(policy, prompt_ids, prompt_mask, seeds, n, temperature, [tok.eos_token_id], tok.pad_token_id)
    want = sample_by_hand(policy, prompt_ids, prompt_mask, seeds, n, temperature, tok.eos_token_id, tok.pad_token_id)
    assert any(a == b for row in want.tolist() for a, b in zip(row, row[1:], strict=False))  # the test can fail
    assert got.tolist() == want.tolist()
    assert policy.generation_config is shipped and shipped.repetition_penalty == 1.3  # put back afterwards


@pytest.fixture
def reward_trainer(tiny_model_dir, tmp_path):
    """``rlaif align reward``'s trainer (align/reward.py::build_trainer) on the two conversations, chosen
    = PROMPTS + REPLIES; the model is the tiny Llama with a new random 1-output head."""
    from align import build_recipe
    from align.data import load_data
    from align.reward import build_trainer

    rows = [{"prompt": p, "chosen": [{"role": "assistant", "content": r}],
             "rejected": [{"role": "assistant", "content": "No."}]} for p, r in zip(PROMPTS, REPLIES, strict=True)]
    data_file = tmp_path / "pairs.jsonl"
    data_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = build_recipe("reward", {"model": tiny_model_dir, "data": str(data_file), "output_dir": str(tmp_path / "rm"),
                                     "max_length": 256, "seed": 0, "quiet": True})
    torch.manual_seed(0)
    return build_trainer(recipe, load_data(recipe.data, "reward", seed=0))


def test_ppo_reads_the_reward_model_where_training_did(reward_trainer):
    from transformers import AutoTokenizer

    rm = reward_trainer.model.eval()
    with torch.no_grad():  # the training forward: TRL's collated batch through the model, as compute_loss runs it
        head = rm.score.weight
        head.copy_(torch.randn(head.shape, generator=torch.Generator().manual_seed(0)))  # weights of order 1: a misread position shows
        batch = reward_trainer.data_collator([reward_trainer.train_dataset[i] for i in range(len(PROMPTS))])
        trained, _ = torch.chunk(rm(**batch, use_cache=False).logits.squeeze(-1), chunks=2)
    tok = AutoTokenizer.from_pretrained(reward_trainer.processing_class.name_or_path)
    assert tok.eos_token_id == tok.pad_token_id == rm.config.pad_token_id  # SmolLM2: pad is EOS
    last = [reward_trainer.train_dataset[i]["chosen_ids"][-1] for i in range(len(PROMPTS))]
    assert tok.convert_ids_to_tokens(last) == ["Ċ", "Ċ"]  # training scores the "\n" after <|im_end|>

    # PPO's reward pass: each response as the policy samples it (its tokens, EOS, then padding), cut at EOS
    # and decoded as align/ppo/rollout.py does, then scored with its prompt.
    replies = [tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in REPLIES]
    width = max(map(len, replies)) + 3
    responses = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in replies])
    mask = core.response_mask(responses, {tok.eos_token_id})
    texts = tok.batch_decode([r[m.bool()] for r, m in zip(responses, mask, strict=True)], skip_special_tokens=True)
    assert texts == REPLIES
    scored = reward_scores(rm, tok, PROMPTS, texts)
    assert scored.tolist() == pytest.approx(trained.tolist(), abs=1e-5)


def test_the_sampler_refuses_rows_without_a_seed():
    """One seed per row: a row without one would be scored with uninitialised noise (torch.empty)."""
    from align.ppo.models import GumbelSampler

    scores = torch.zeros(2, 5)
    with pytest.raises(ValueError, match="1 seeds for 2 rows"):
        GumbelSampler([7], prompt_len=3, temperature=1.0)(torch.zeros(2, 4, dtype=torch.long), scores)
    assert GumbelSampler([7, 8], prompt_len=3, temperature=1.0)(torch.zeros(2, 4, dtype=torch.long), scores).shape \
        == (2, 5)
