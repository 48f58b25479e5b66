"""PPO on a reward model (RL-CAI, arXiv 2212.08073 sec. 4; InstructGPT, arXiv 2203.02155; PPO, arXiv
1707.06347), written for this project because TRL 1.16 has no PPO trainer. It follows "The N
Implementation Details of RLHF with PPO" (arXiv 2403.17031); each detail is named where the code
applies it (align/ppo/core.py, rollout.py, models.py).

A step: make a batch of experience (rollout.py), then ``num_ppo_epochs`` passes over it in
``num_mini_batches`` shuffled minibatches; each minibatch is one optimizer step accumulated over
``gradient_accumulation_steps`` micro-batches. Losses are token sums divided by the token count of the
whole minibatch over all processes (times the process count, since DDP averages gradients), so
the update does not depend on how the minibatch is split into micro-batches or processes
(tests/test_ppo_train.py::test_gradient_accumulation_matches_one_big_batch,
tests/test_ppo_integration.py::test_two_processes_match_one).
After each optimizer step the approximate KL to the rollout policy is checked against ``target_kl``
and the step's remaining updates are skipped above it (Spinning Up's early stopping).

Runs under ``accelerate launch`` (DDP, DeepSpeed ZeRO-2): policy and value model are one module. The
micro-batches go through ``Accelerator.accumulate``, so DDP syncs gradients once per window and
DeepSpeed's engine, which clips and steps inside ``backward``, steps once per window too, at the
recipe's ``max_grad_norm`` (``make_accelerator``). Checkpoints keep every rank's optimizer state
(align/ppo/state.py). ZeRO-2 on 2 CPU processes: tests/test_ppo_processes.py.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

import align.ppo.core as core
from align.ppo.config import PPORecipe, check_reward_model
from align.ppo.rollout import Batch, make_batch, row_seed


@dataclass
class Context:
    recipe: PPORecipe
    accelerator: Any
    tokenizer: Any
    model: Any  # PolicyAndValue, prepared by accelerate
    optimizer: Any
    ref: Any
    rm: Any
    eos_ids: list[int]
    rm_tokenizer: Any = None  # the reward model's own tokenizer: the chat template its scores were trained on
    funcs: list[tuple[str, Any]] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    kl: core.AdaptiveKL = None
    moments: core.RunningMoments = field(default_factory=core.RunningMoments)
    log_samples: bool = True

    def reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(t.reshape(1).clone(), "sum").reshape(())


def setup(recipe: PPORecipe) -> Context:
    """Load tokenizers and models (the reward model checked against the policy's tokenizer first)."""
    from transformers import AutoTokenizer

    from align.card import resolve_model
    from align.ppo.models import PolicyAndValue, load_models
    from align.rewards import get_reward

    accelerator = make_accelerator(recipe)
    policy_dir = resolve_model(recipe.model)
    check_reward_model(recipe, policy_dir)
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        from align.config import RecipeError

        raise RecipeError(f"model {recipe.model}: its tokenizer has no chat template; PPO formats each prompt "
                          f"with it (use an instruct model or an SFT output)")
    torch.manual_seed(recipe.seed)  # the value head when it starts from the policy
    dtype = torch.bfloat16 if recipe.bf16 else torch.float32
    policy, ref, rm, value = load_models(recipe, policy_dir, accelerator.device, dtype)
    model = PolicyAndValue(policy, value)
    # Adam eps 1e-5 (arXiv 2403.17031, detail "Adam optimizer's epsilon")
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, eps=1e-5, weight_decay=0.0)
    eos = {tokenizer.eos_token_id}
    gen_eos = getattr(policy.generation_config, "eos_token_id", None)
    eos.update(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
    weights = recipe.reward_weights or [1.0] * len(recipe.reward_funcs)
    funcs = [(name.rpartition(":")[2], get_reward(name)) for name in recipe.reward_funcs]
    # The reward model reads the conversation as RewardTrainer rendered it, with its own tokenizer's chat template
    # (align/reward_scoring.py; TRL's GRPOTrainer reads a reward model through its own tokenizer too): the
    # vocabulary check above does not make the policy's template the same text (tests/test_ppo_review.py).
    rm_tokenizer = AutoTokenizer.from_pretrained(recipe.reward_model) if rm is not None else None
    ctx = Context(recipe, accelerator, tokenizer, model, optimizer, ref, rm, sorted(e for e in eos if e is not None),
                  rm_tokenizer, funcs, weights, core.AdaptiveKL(recipe.kl_coef, recipe.kl_target, recipe.kl_horizon))
    return ctx


def make_accelerator(recipe: PPORecipe):
    """The Accelerator, counting ``gradient_accumulation_steps`` micro-batches per optimizer step, and
    under DeepSpeed its config filled from the recipe.

    ``accelerate launch`` exports ACCELERATE_GRADIENT_ACCUMULATION_STEPS when its config names it, which
    wins over the constructor's argument, so the count is set again after. DeepSpeed's engine clips the
    gradients and counts the accumulation itself, from its config; accelerate 1.16 fills an ``auto``
    clipping norm with 1.0 and cannot fill the micro-batch size without a dataloader, so the recipe's
    values are written in, and a value the user's DeepSpeed config sets otherwise is refused.
    DeepSpeed on a CPU (DS_ACCELERATOR=cpu, tests) runs over gloo: accelerate picks no process group
    backend for a CPU and would count one process per rank, so gloo is named."""
    import os

    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    from align.config import _has_accelerator

    cpu = not _has_accelerator()
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    handlers = [InitProcessGroupKwargs(backend="gloo")] if cpu and deepspeed else None
    acc = Accelerator(mixed_precision="bf16" if recipe.bf16 else "no", cpu=cpu and not deepspeed,
                      gradient_accumulation_steps=recipe.gradient_accumulation_steps, kwargs_handlers=handlers)
    acc.gradient_accumulation_steps = recipe.gradient_accumulation_steps
    if acc.state.deepspeed_plugin is not None:
        deepspeed_settings(acc.state.deepspeed_plugin.deepspeed_config, recipe, acc.num_processes)
    return acc


def deepspeed_settings(config: dict, recipe: PPORecipe, world: int) -> None:
    """Write the recipe's batch, accumulation and clipping into a DeepSpeed config (``auto`` or absent
    keys); a key set to another value is a RecipeError naming it."""
    from align.config import RecipeError

    micro, accum = recipe.per_device_train_batch_size, recipe.gradient_accumulation_steps
    wanted = {"train_micro_batch_size_per_gpu": ("per_device_train_batch_size", micro),
              "gradient_accumulation_steps": ("gradient_accumulation_steps", accum),
              "train_batch_size": ("per_device_train_batch_size x gradient_accumulation_steps x processes",
                                   micro * accum * world),
              "gradient_clipping": ("max_grad_norm", recipe.max_grad_norm)}
    for key, (field_name, value) in wanted.items():
        got = config.get(key, "auto")
        if got not in ("auto", None) and float(got) != float(value):
            raise RecipeError(f"the DeepSpeed config sets {key}: {got}, but the PPO recipe's {field_name} is "
                              f"{value}; drop {key} from the DeepSpeed config (or set it to auto) so the recipe's "
                              f"value is used")
        config[key] = value


def prepare(ctx: Context) -> None:
    ctx.model, ctx.optimizer = ctx.accelerator.prepare(ctx.model, ctx.optimizer)


def update(ctx: Context, batch: Batch, step: int) -> dict[str, float]:
    """The PPO epochs over one batch; returns the step's mean losses and statistics."""
    r, acc = ctx.recipe, ctx.accelerator
    n = batch.responses.shape[1]
    per_mb = r.per_device_train_batch_size * r.gradient_accumulation_steps
    sums: dict[str, float] = {}
    updates, stopped = 0, False
    ctx.model.train()
    for epoch in range(r.num_ppo_epochs):
        g = torch.Generator().manual_seed(hash((r.seed, step, epoch, acc.process_index)) % (2**63))
        order = torch.randperm(len(batch.responses), generator=g).to(batch.responses.device)
        for mb in range(r.num_mini_batches):
            mb_rows = batch.rows(order[mb * per_mb:(mb + 1) * per_mb])
            tokens = ctx.reduce_sum(mb_rows.mask.sum())
            scale = acc.num_processes / tokens.clamp(min=1)
            got = {k: torch.zeros((), device=acc.device) for k in
                   ("loss", "policy_loss", "value_loss", "entropy", "clipfrac", "vf_clipfrac", "approx_kl")}
            for i in range(0, per_mb, r.per_device_train_batch_size):
                micro = mb_rows.rows(torch.arange(i, min(i + r.per_device_train_batch_size, per_mb)))
                # DDP: no gradient sync before the window's last micro-batch; DeepSpeed: its engine steps there
                with acc.accumulate(ctx.model):
                    with acc.autocast():
                        logits, values = ctx.model(micro.input_ids, micro.attention_mask, n, r.temperature)
                    new_logp = torch.gather(torch.log_softmax(logits, -1), 2, micro.responses.unsqueeze(-1)).squeeze(-1)
                    pg, pg_stats = core.policy_loss(new_logp, micro.logprobs, micro.advantages, micro.mask, r.cliprange)
                    vf, vf_stats = core.value_loss(values, micro.values, micro.returns, micro.mask, r.cliprange_value)
                    ent = (core.entropy_from_logits(logits) * micro.mask).sum()
                    loss = pg + r.vf_coef * vf - r.ent_coef * ent
                    # accelerate (or DeepSpeed's engine) divides by the accumulation steps; ``scale`` already
                    # normalises by the whole minibatch's tokens
                    acc.backward(loss * scale * r.gradient_accumulation_steps)
                for k, v in (("loss", loss), ("policy_loss", pg), ("value_loss", vf), ("entropy", ent),
                             *pg_stats.items(), *vf_stats.items()):
                    got[k] += v.detach()
            if not acc.sync_gradients:
                raise RuntimeError("PPO: a minibatch ended inside an accumulation window")
            norm = acc.clip_grad_norm_(ctx.model.parameters(), r.max_grad_norm)  # DeepSpeed: the engine clipped
            ctx.optimizer.step()  # DeepSpeed: a no-op, its engine stepped in backward
            ctx.optimizer.zero_grad(set_to_none=True)
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + (float(norm) if norm is not None else math.nan)
            updates += 1
            means = {k: float(ctx.reduce_sum(v) / tokens.clamp(min=1)) for k, v in got.items()}
            for k, v in means.items():
                sums[k] = sums.get(k, 0.0) + v
            if r.target_kl is not None and means["approx_kl"] > r.target_kl:
                stopped = True
                break
        if stopped:
            break
    out = {k: v / max(updates, 1) for k, v in sums.items()}
    out.update(ppo_updates=updates, early_stopped=stopped)
    return out


def step_rows(data: list[dict], step: int, global_batch: int, seed: int) -> list[tuple[int, dict]]:
    """The (global position, row) pairs of ``step``: epochs of shuffled prompts laid end to end."""
    import random

    n = len(data)
    out = []
    for k in range(step * global_batch, (step + 1) * global_batch):
        epoch, i = divmod(k, n)
        order = list(range(n))
        random.Random(seed * 100_003 + epoch).shuffle(order)
        out.append((k - step * global_batch, data[order[i]]))
    return out


def total_steps(recipe: PPORecipe, n_prompts: int, world: int) -> int:
    if recipe.max_steps > 0:
        return recipe.max_steps
    return max(1, math.ceil(recipe.num_train_epochs * n_prompts / (recipe.rollouts_per_device * world)))


def train(recipe: PPORecipe) -> dict[str, Any]:
    """PPO-train ``recipe.model``; returns the metrics of metrics.json (rank 0; others get their own)."""
    import align.ppo.state as state

    data = recipe.check_data()  # prompts, reward functions and reward model, before any model loads
    ctx = setup(recipe)
    start, history = state.resume(ctx)  # the KL coefficient, reward moments and metrics
    prepare(ctx)
    if start:
        state.load_weights(ctx)  # weights and optimizer states, each rank its own
    acc = ctx.accelerator
    world, local = acc.num_processes, recipe.rollouts_per_device
    steps = total_steps(recipe, len(data.train), world)
    writer = state.MetricsWriter(recipe.work_dir, history, acc.is_main_process)
    for step in range(start, steps):
        t0 = time.perf_counter()
        rows = step_rows(data.train, step, local * world, recipe.seed)
        mine = rows[acc.process_index * local:(acc.process_index + 1) * local]
        batch, stats = make_batch(ctx, [row for _, row in mine], [row_seed(recipe.seed, step, k) for k, _ in mine])
        t1 = time.perf_counter()
        stats.update(update(ctx, batch, step))
        stats.update(step=step + 1, train_s=time.perf_counter() - t1, seconds=time.perf_counter() - t0,
                     lr=ctx.optimizer.param_groups[0]["lr"])
        writer.add(stats)
        if recipe.save_steps and (step + 1) % recipe.save_steps == 0 and step + 1 < steps:
            state.save(ctx, step + 1, writer.history)
    return state.finish(ctx, data, writer.history, steps, start)
