"""One batch of experience: sample responses, score them, and turn the scores into advantages.

Each number below is the one named in align/ppo/core.py; what happens, in order:

1. the prompts (chat template, generation prompt) are left-padded and sampled by the policy
   (align/ppo/models.py: ``sample``);
2. the mask keeps each response up to and including its first EOS (detail "truncate after EOS");
3. the score is the reward model's output on prompt + response rendered with its own tokenizer's chat
   template, read where its training read it (align/reward_scoring.py), normalised by its running mean
   and std (detail "reward normalization"), times ``reward_model_weight``, plus each reward
   function's weighted score, minus ``missing_eos_penalty`` for a response that hit the length limit
   without EOS (detail "EOS trick"). A reward function's ``None`` is no verdict, never 0: a response
   lacking any function's verdict is left out of the update (its tokens are masked out of the losses
   and of the whitening, as TRL's GRPO leaves an unscorable completion out of its group's statistics)
   and out of ``reward_mean``; ``no_verdict_fraction`` logs the share. A function with no verdict for
   any response of the step stops the run (align/rewards/combine.py: ``require_a_verdict``)
   (tests/test_ppo_train.py::test_responses_without_a_verdict_are_left_out_of_the_update);
4. log-probabilities of the policy and the reference and the values are recomputed by a forward pass
   over prompt + response (detail: never reuse ``generate``'s scores, whose padding differs);
5. per-token rewards = -beta KL with the score on the last token, optionally whitened; GAE gives
   advantages and returns; advantages are whitened over the whole batch, all processes together.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass

import torch

import align.ppo.core as core
from align.ppo.models import ref_logprobs, reward_scores, sample


@dataclass
class Batch:
    """The rollouts of one process for one PPO step; every tensor has one row per response."""

    input_ids: torch.Tensor  # prompt (left-padded) + response (padded after EOS)
    attention_mask: torch.Tensor
    responses: torch.Tensor
    mask: torch.Tensor  # response tokens up to and including EOS
    logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor

    def rows(self, idx: torch.Tensor) -> Batch:
        return Batch(**{k: v[idx] for k, v in self.__dict__.items()})


def encode_prompts(tokenizer, prompts: list[list[dict]], max_length: int | None, device):
    texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    if max_length:
        ids = [x[-max_length:] for x in ids]  # keep the end of a long conversation: the turn to answer
    width = max(len(x) for x in ids)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=device)
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
    return input_ids, mask


def score_with_functions(ctx, rows: list[dict], texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Weighted sum of the reward functions' scores, which responses have every function's verdict, and
    the logged stats. A reward function with no verdict for any response of the step (all processes)
    stops the run (align/rewards/combine.py: ``require_a_verdict``)."""
    from align.rewards.combine import require_a_verdict, reward_results, silence

    total = torch.zeros(len(rows), dtype=torch.float32)
    judged = torch.ones(len(rows), dtype=torch.bool)
    stats: dict[str, float] = {}
    reasons: Counter = Counter()
    prompts = [r["prompt"] for r in rows]
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    columns = {k: [r.get(k) for r in rows] for k in rows[0] if k != "prompt"} if rows else {}
    for (name, fn), w in zip(ctx.funcs, ctx.weights, strict=True):
        records = reward_results(fn, prompts, completions, **columns)
        verdicts, n, why = silence(records)
        everyone = ctx.accelerator.reduce(torch.tensor([verdicts, n], device=ctx.accelerator.device), "sum")
        require_a_verdict(name, int(everyone[0]), int(everyone[1]), why, "PPO")
        got = [x.score for x in records if x.score is not None]
        stats[f"rewards/{name}/mean"] = sum(got) / len(got) if got else math.nan
        stats[f"rewards/{name}/scored"] = len(got) / max(len(records), 1)
        judged &= torch.tensor([x.score is not None for x in records])
        total += w * torch.tensor([0.0 if x.score is None else float(x.score) for x in records])
        reasons += why
    # each function judged some responses, but maybe no response was judged by all of them
    everyone = ctx.accelerator.reduce(torch.tensor([int(judged.sum()), len(rows)], device=ctx.accelerator.device),
                                      "sum")
    require_a_verdict("+".join(name for name, _ in ctx.funcs), int(everyone[0]), int(everyone[1]), reasons, "PPO")
    return total, judged, stats


def row_seed(seed: int, step: int, position: int) -> int:
    """The sampling seed of the response at ``position`` of ``step`` (align/ppo/models.py seeds each
    response's generator with it), so a rollout depends only on (seed, step, position) and the weights."""
    from plumbing.hashing import item_id

    return int(item_id("ppo-sample", seed, step, position)[:15], 16)


def make_batch(ctx, rows: list[dict], seeds: list[int]) -> tuple[Batch, dict]:
    """Sample, score and compute advantages for ``rows`` (this process's share of the step)."""
    r, acc = ctx.recipe, ctx.accelerator
    t0 = time.perf_counter()
    prompt_ids, prompt_mask = encode_prompts(ctx.tokenizer, [x["prompt"] for x in rows], r.max_length, acc.device)
    model = acc.unwrap_model(ctx.model)
    responses = sample(model.policy, prompt_ids, prompt_mask, seeds, r.max_new_tokens, r.temperature,
                       ctx.eos_ids, ctx.tokenizer.pad_token_id)
    mask = core.response_mask(responses, set(ctx.eos_ids)).to(acc.device)
    input_ids = torch.cat([prompt_ids, responses], dim=1)
    attention_mask = torch.cat([prompt_mask, mask.long()], dim=1)
    n = responses.shape[1]
    logprobs, values, ref = [], [], []
    with torch.no_grad():
        for i in range(0, len(rows), r.per_device_train_batch_size):
            s = slice(i, i + r.per_device_train_batch_size)
            logits, v = model(input_ids[s], attention_mask[s], n, r.temperature)
            logprobs.append(torch.gather(torch.log_softmax(logits, -1), 2, responses[s].unsqueeze(-1)).squeeze(-1))
            values.append(v)
            ref.append(ref_logprobs(ctx.ref, input_ids[s], attention_mask[s], responses[s], r.temperature))
    logprobs, values, ref = torch.cat(logprobs), torch.cat(values), torch.cat(ref)
    t1 = time.perf_counter()

    texts = ctx.tokenizer.batch_decode([resp[m.bool()] for resp, m in zip(responses, mask, strict=True)],
                                       skip_special_tokens=True)
    raw = torch.zeros(len(rows), device=acc.device)  # the score as the reward sources give it
    trained = torch.zeros(len(rows), device=acc.device)  # the same with the reward model normalised
    stats: dict[str, float] = {}
    if ctx.rm is not None:
        b = r.per_device_train_batch_size
        rm_raw = torch.cat([reward_scores(ctx.rm, ctx.rm_tokenizer, [x["prompt"] for x in rows[i:i + b]], texts[i:i + b])
                            for i in range(0, len(rows), b)]).to(acc.device)
        everyone = acc.gather(rm_raw)
        ctx.moments.update(everyone.cpu())
        stats["reward_model/mean"] = float(everyone.mean())
        rm_score = ctx.moments.normalise(rm_raw) if r.normalize_reward else rm_raw
        raw = raw + r.reward_model_weight * rm_raw
        trained = trained + r.reward_model_weight * rm_score
    judged = torch.ones(len(rows), dtype=torch.bool, device=acc.device)
    if ctx.funcs:
        func_score, judged, func_stats = score_with_functions(ctx, rows, texts)
        raw, trained = raw + func_score.to(acc.device), trained + func_score.to(acc.device)
        judged = judged.to(acc.device)
        stats.update(func_stats)
    eos = core.ended_with_eos(responses, set(ctx.eos_ids)).to(acc.device)
    scores = trained - r.missing_eos_penalty * (~eos).float()
    t2 = time.perf_counter()

    rewards, kl = core.kl_penalised_rewards(logprobs, ref, scores, mask, ctx.kl.value)
    trained_mask = mask * judged.unsqueeze(1)  # a response without every verdict is left out of the update
    reduce = ctx.reduce_sum
    if r.whiten_rewards:
        rewards = core.whiten(rewards, trained_mask, shift_mean=False, reduce=reduce)
    advantages, returns = core.gae(rewards, values, trained_mask, r.gamma, r.lam)
    advantages = core.whiten(advantages, trained_mask, reduce=reduce)
    batch = Batch(input_ids, attention_mask, responses, trained_mask, logprobs, values * trained_mask, advantages,
                  returns)

    g = acc.gather
    kl_seq, judged_all = g(kl.sum(1)), g(judged)
    score_all, raw_all = g(scores)[judged_all], g(raw)[judged_all]
    stats.update({
        "reward_mean": float(raw_all.mean()), "reward_std": float(raw_all.std()) if raw_all.numel() > 1 else 0.0,
        "score_mean": float(score_all.mean()), "kl": float(kl_seq.mean()),
        "rlhf_reward": float((score_all - ctx.kl.value * kl_seq[judged_all]).mean()), "kl_coef": ctx.kl.value,
        "response_length": float(g(mask.sum(1)).mean()), "eos_fraction": float(g(eos.float()).mean()),
        "no_verdict_fraction": float(1.0 - judged_all.float().mean()), "rollout_s": t1 - t0, "reward_s": t2 - t1})
    ctx.kl.update(stats["kl"], int(kl_seq.numel()))
    if ctx.log_samples and acc.is_main_process:
        stats["sample"] = texts[0][:200]
    return batch, stats
