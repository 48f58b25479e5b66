"""The arithmetic of PPO for language models, as plain tensor functions (no models, no I/O).

Notation: a batch of B responses padded to T tokens; ``mask[b, t]`` is 1 on the response tokens up
to and including the first EOS. The numbered details are those of Huang et al., "The N
Implementation Details of RLHF with PPO" (arXiv 2403.17031), which follows OpenAI's
lm-human-preferences (Ziegler et al., arXiv 1909.08593) and InstructGPT (arXiv 2203.02155).

Per-token reward (detail "KL penalty as a per-token reward"; arXiv 2203.02155 eq. 2)::

    r_t = -beta * (log pi(y_t) - log pi_ref(y_t))          for every response token t
    r_T += score                                            at the last response token T only

GAE (Schulman et al., arXiv 1506.02438) with V = 0 after the last token::

    delta_t = r_t + gamma V_{t+1} - V_t,   A_t = delta_t + gamma lambda A_{t+1},   R_t = A_t + V_t

Worked example (tests/test_ppo_core.py::test_gae_four_tokens): r = [0, 0, 0, 1], V = [.5, .5, .5, .5],
gamma = 1, lambda = 0.5 gives delta = [0, 0, 0, .5] and A = [.0625, .125, .25, .5].

Clipped policy loss (arXiv 1707.06347 eq. 7), ratio rho = exp(log pi - log pi_old)::

    L_pg = mean_t max(-A_t rho_t, -A_t clip(rho_t, 1 - eps, 1 + eps))

e.g. A = 1, eps = 0.2: rho = 1.5 -> -1.2 (clipped, no gradient); rho = 0.5 -> -0.5 (not clipped).
Clipped value loss (detail "value function loss clipping")::

    L_v = 0.5 mean_t max((V - R)^2, (V_old + clip(V - V_old, -eps_v, eps_v) - R)^2)

e.g. V_old = 0, V = 1, R = 1, eps_v = 0.2: max(0, 0.64) / 2 = 0.32
(tests/test_ppo_core.py::test_policy_loss_at_the_clip_edges, ::test_value_loss_at_the_clip_edges).
"""

from __future__ import annotations

import math

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8,
           reduce=None) -> torch.Tensor:
    """(x - mean) / std over the masked entries (detail "advantage normalization"); with
    ``shift_mean=False`` the mean is added back (reward whitening keeps the sign of the reward).
    Masked-out entries are returned as 0. ``reduce`` sums a tensor over processes, so several
    processes whiten with the statistics of the whole batch. Example: [1, 2, 3] -> [-1, 0, 1]."""
    total = reduce or (lambda t: t)
    n = total(mask.sum())
    mean = total((x * mask).sum()) / n.clamp(min=1)
    var = total(((x - mean) ** 2 * mask).sum()) / (n - 1).clamp(min=1)  # unbiased, as lm-human-preferences
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def response_mask(response_ids: torch.Tensor, eos_ids: set[int]) -> torch.Tensor:
    """1 on each response token up to and including the first EOS, 0 after (detail "truncate after
    EOS": whatever generate emits after the first EOS is padding). [5, 2, 2, 7] with EOS 2 -> [1, 1, 0, 0]."""
    is_eos = torch.zeros_like(response_ids, dtype=torch.bool)
    for e in eos_ids:
        is_eos |= response_ids == e
    eos_before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()  # EOS tokens strictly before t
    return (eos_before == 0).to(torch.float32)


def ended_with_eos(response_ids: torch.Tensor, eos_ids: set[int]) -> torch.Tensor:
    is_eos = torch.zeros_like(response_ids, dtype=torch.bool)
    for e in eos_ids:
        is_eos |= response_ids == e
    return is_eos.any(dim=1)


def kl_penalised_rewards(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, scores: torch.Tensor,
                         mask: torch.Tensor, kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards ``-kl_coef * (logp - ref_logp)`` with ``scores[b]`` added at the last
    response token of row b; returns (rewards, per-token KL), both 0 outside the mask."""
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)
    rewards[torch.arange(len(scores)), last] += scores
    return rewards * mask, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns by GAE (module docstring); values past the mask count as 0."""
    values = values * mask
    rewards = rewards * mask
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = delta + gamma * lam * last
        adv[:, t] = last
    adv = adv * mask
    return adv, (adv + values) * mask


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, clip: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Summed (not averaged) clipped surrogate over the masked tokens, and its per-token stats sums:
    ``clipfrac`` (tokens where the clipped term wins), ``approx_kl`` (0.5 (log rho)^2, detail
    "approximate KL"). Callers divide by the token count of the whole minibatch."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = (torch.max(unclipped, clipped) * mask).sum()
    stats = {"clipfrac": ((clipped > unclipped).float() * mask).sum().detach(),
             "approx_kl": (0.5 * log_ratio.pow(2) * mask).sum().detach()}
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Summed clipped value loss over the masked tokens (module docstring) and ``vf_clipfrac``."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    unclipped_l, clipped_l = (values - returns) ** 2, (clipped_values - returns) ** 2
    loss = 0.5 * (torch.max(unclipped_l, clipped_l) * mask).sum()
    return loss, {"vf_clipfrac": ((clipped_l > unclipped_l).float() * mask).sum().detach()}


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy of softmax(logits): logsumexp(z) - sum softmax(z) z."""
    p = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (p * logits).sum(dim=-1)


class AdaptiveKL:
    """The KL coefficient: fixed (``target`` None) or Ziegler et al.'s proportional controller
    (arXiv 1909.08593 sec. 2.2)::

        e = clip(KL / target - 1, -0.2, 0.2),   beta <- beta (1 + e * n / horizon)

    with KL the batch's mean summed per-response KL and n the batch size.
    Example: beta 0.1, target 6, KL 12, n 64, horizon 10000 -> e = 0.2, beta = 0.1 * 1.00128
    (tests/test_ppo_core.py::test_adaptive_kl_controller)."""

    def __init__(self, value: float, target: float | None = None, horizon: int = 10000):
        self.value, self.target, self.horizon = float(value), target, horizon

    def update(self, kl: float, n: int) -> None:
        if self.target is None or not math.isfinite(kl):
            return
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n / self.horizon


class RunningMoments:
    """Running mean and standard deviation of every score seen (Chan et al.'s parallel update), used to
    normalise the reward model's scores to mean 0, std 1 as training goes (arXiv 2403.17031, detail
    "reward normalization"; OpenRLHF's ``normalize_reward``). Adding [1, 3] then [5] gives mean 3,
    std 2 (tests/test_ppo_core.py::test_running_moments)."""

    def __init__(self) -> None:
        self.mean, self.m2, self.count = 0.0, 0.0, 0

    def update(self, xs: torch.Tensor) -> None:
        n = xs.numel()
        if n == 0:
            return
        b_mean = float(xs.double().mean())
        b_m2 = float(((xs.double() - b_mean) ** 2).sum())
        total = self.count + n
        delta = b_mean - self.mean
        self.mean += delta * n / total
        self.m2 += b_m2 + delta**2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 1.0

    def normalise(self, xs: torch.Tensor) -> torch.Tensor:
        return (xs - self.mean) / max(self.std, 1e-6)

    def state(self) -> dict:
        return {"mean": self.mean, "m2": self.m2, "count": self.count}

    def load(self, state: dict) -> None:
        self.mean, self.m2, self.count = state["mean"], state["m2"], state["count"]
