"""The four models of PPO and the forward passes over them (arXiv 2203.02155 sec. 3.5; arXiv 2403.17031).

- policy: a causal LM, trained; the frozen reference: a second copy of the starting policy (the KL term);
- reward model: the 1-output sequence classifier of ``rlaif align reward``, frozen; it scores the
  chat-rendered prompt + response text at the token its training read (align/reward_scoring.py);
- value model: a copy of the reward model (or of the policy's backbone with a new head), trained; its
  head reads the hidden state at every position, so ``V_t`` is read where the logits of token t are.

Sampling is transformers ``generate`` with two changes: nothing of the checkpoint's own
``generation_config`` (repetition penalty, n-gram bans, top-k/top-p, a minimum length, ...) applies, so a
response is a sample of softmax(z / T), the distribution the ratio and the KL are computed under (see
``sample``); and each response draws its randomness from its own generator seeded by (seed, step, its
place in the global batch), through the Gumbel-max trick (argmax(z / T + G) with G ~ Gumbel(0, 1) is a
sample of softmax(z / T)). So a response does not depend on which other prompts share its batch or
process: one process and two processes sample the same responses
(tests/test_ppo_integration.py::test_two_processes_match_one), and a resumed run samples what the killed
run would have.
"""

from __future__ import annotations

import torch
from torch import nn

from align.reward_scoring import reward_scores  # noqa: F401 - the reward model's pass (align/ppo/rollout.py)


class GumbelSampler:
    """A ``LogitsProcessor`` for greedy ``generate``: adds temperature and per-row seeded Gumbel noise."""

    def __init__(self, seeds: list[int], prompt_len: int, temperature: float):
        self.seeds, self.prompt_len, self.temperature = seeds, prompt_len, temperature

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1] - self.prompt_len
        if len(self.seeds) != scores.shape[0]:  # a row without a seed would add uninitialised memory
            raise ValueError(f"GumbelSampler has {len(self.seeds)} seeds for {scores.shape[0]} rows")
        noise = torch.empty(scores.shape, dtype=torch.float32)
        for row, seed in enumerate(self.seeds):
            g = torch.Generator().manual_seed((seed * 1_000_003 + t) % (2**63 - 1))
            u = torch.rand(scores.shape[1], generator=g, dtype=torch.float64).clamp_(1e-20, 1.0 - 1e-16)
            noise[row] = (-torch.log(-torch.log(u))).float()
        return scores.float() / self.temperature + noise.to(scores.device)


def disable_dropout(model: nn.Module) -> None:
    """Dropout off in every model (detail "disable dropout"): the log-probabilities of the rollout and of
    the first PPO pass must agree, or the ratio starts away from 1."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip the left padding, as ``generate`` computes them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def backbone(model: nn.Module) -> nn.Module:
    return getattr(model, model.base_model_prefix)


def head(model: nn.Module, where: str) -> nn.Module:
    head = getattr(model, "score", None)
    if head is None:
        from align.config import RecipeError

        raise RecipeError(f"{where}: a {type(model).__name__} has no `score` head (the 1-output head of "
                          f"transformers' *ForSequenceClassification decoders); use a decoder-only reward model")
    return head


class PolicyAndValue(nn.Module):
    """Policy and value model as one module, so DDP/DeepSpeed wrap one thing and one optimizer steps both."""

    def __init__(self, policy: nn.Module, value: nn.Module):
        super().__init__()
        self.policy, self.value = policy, value

    def forward(self, input_ids, attention_mask, n_response: int, temperature: float):
        """Response-position logits (temperature-scaled) and values: each of shape (B, n_response[, V])."""
        pos = position_ids(attention_mask)
        out = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos,
                          logits_to_keep=n_response + 1)
        logits = out.logits[:, :-1].float() / temperature
        hidden = backbone(self.value)(input_ids=input_ids, attention_mask=attention_mask,
                                      position_ids=pos).last_hidden_state
        values = head(self.value, "value_model")(hidden[:, -n_response - 1:-1]).squeeze(-1).float()
        return logits, values


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return torch.gather(torch.log_softmax(logits, dim=-1), 2, tokens.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def ref_logprobs(ref: nn.Module, input_ids, attention_mask, responses, temperature: float) -> torch.Tensor:
    n = responses.shape[1]
    out = ref(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
              logits_to_keep=n + 1)
    return token_logprobs(out.logits[:, :-1].float() / temperature, responses)


@torch.no_grad()
def sample(policy: nn.Module, prompt_ids, prompt_mask, seeds: list[int], max_new_tokens: int,
           temperature: float, eos_ids: list[int], pad_id: int) -> torch.Tensor:
    """Responses (B, max_new_tokens), padded with ``pad_id`` after EOS (or after the limit).

    Every token is argmax(z / T + G) over the policy's raw logits z, i.e. a sample of softmax(z / T), the
    distribution whose log-probabilities the ratio and the KL use (tests/test_ppo_sampling.py). ``generate``
    fills each field left unset in the config it is given from ``policy.generation_config`` (transformers
    5.x ``_prepare_generation_config``), and a field cannot be unset by passing ``None``, so the policy's
    own generation config is set aside while sampling. Ignored, whatever the checkpoint ships:
    repetition_penalty, encoder_repetition_penalty, no_repeat_ngram_size, encoder_no_repeat_ngram_size,
    bad_words_ids, sequence_bias, suppress_tokens, begin_suppress_tokens, min_length, min_new_tokens,
    forced_bos_token_id, forced_eos_token_id, exponential_decay_length_penalty, guidance_scale,
    watermarking_config, remove_invalid_values, renormalize_logits, stop_strings, max_time, max_length
    (each would change or cut what is sampled), and temperature, top_k, top_p, min_p, typical_p, top_h,
    epsilon_cutoff, eta_cutoff, do_sample, num_beams (the sampling here is the Gumbel-max step above).
    """
    from transformers import GenerationConfig, LogitsProcessorList

    config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, min_new_tokens=0,
                              eos_token_id=eos_ids, pad_token_id=pad_id)
    was_training, shipped = policy.training, policy.generation_config
    policy.eval()
    policy.generation_config = GenerationConfig()  # the library defaults: no processor beyond ours
    try:
        out = policy.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=config,
                              logits_processor=LogitsProcessorList([GumbelSampler(seeds, prompt_ids.shape[1],
                                                                                  temperature)]))
    finally:
        policy.generation_config = shipped
        policy.train(was_training)
    responses = out[:, prompt_ids.shape[1]:]
    if responses.shape[1] < max_new_tokens:  # every row ended early: pad to the fixed width
        pad = responses.new_full((responses.shape[0], max_new_tokens - responses.shape[1]), pad_id)
        responses = torch.cat([responses, pad], dim=1)
    return responses


def load_models(recipe, policy_dir: str, device, dtype: torch.dtype):
    """(policy, reference, reward model or None, value model), dropout off, on ``device``."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    kw = {"dtype": dtype}
    policy = AutoModelForCausalLM.from_pretrained(policy_dir, **kw)
    ref = AutoModelForCausalLM.from_pretrained(policy_dir, **kw).eval().requires_grad_(False)
    rm = None
    if recipe.reward_model:
        rm = AutoModelForSequenceClassification.from_pretrained(recipe.reward_model, **kw).eval().requires_grad_(False)
    value_from = recipe.value_model or recipe.reward_model or policy_dir
    value = AutoModelForSequenceClassification.from_pretrained(value_from, num_labels=1, **kw)
    if value.config.pad_token_id is None:
        value.config.pad_token_id = policy.config.pad_token_id
    for m in (policy, ref, rm, value):
        if m is not None:
            disable_dropout(m)
            m.to(device)
    if recipe.gradient_checkpointing:
        policy.gradient_checkpointing_enable()
        value.gradient_checkpointing_enable()
    return policy, ref, rm, value
