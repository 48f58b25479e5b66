"""PPO arithmetic at hand-worked numbers (align/ppo/core.py; arXiv 2403.17031)."""

from __future__ import annotations

import math

import pytest
import torch

from align.ppo import core


def test_gae_four_tokens():
    # delta = r_t + gamma V_{t+1} - V_t with V_4 = 0: [0 + .5 - .5, 0, 0, 1 + 0 - .5] = [0, 0, 0, .5]
    # A_3 = .5, A_2 = 0 + .5 * .5 = .25, A_1 = .125, A_0 = .0625; returns = A + V
    rewards = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    values = torch.full((1, 4), 0.5)
    mask = torch.ones(1, 4)
    adv, ret = core.gae(rewards, values, mask, gamma=1.0, lam=0.5)
    assert adv.tolist()[0] == pytest.approx([0.0625, 0.125, 0.25, 0.5])
    assert ret.tolist()[0] == pytest.approx([0.5625, 0.625, 0.75, 1.0])
    # gamma 0.5, lambda 1: delta = [0 + .25 - .5, -.25, -.25, .5]; A_2 = -.25 + .5*.5 = 0, A_1 = -.25, A_0 = -.375
    adv, _ = core.gae(rewards, values, mask, gamma=0.5, lam=1.0)
    assert adv.tolist()[0] == pytest.approx([-0.375, -0.25, 0.0, 0.5])


def test_gae_stops_at_the_mask():
    # a 2-token response padded to 4: the value after the last real token counts as 0, padding gets 0
    rewards = torch.tensor([[0.0, 1.0, 7.0, 7.0]])
    values = torch.tensor([[0.5, 0.5, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    adv, ret = core.gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert adv.tolist()[0] == pytest.approx([0.5, 0.5, 0.0, 0.0])
    assert ret.tolist()[0] == pytest.approx([1.0, 1.0, 0.0, 0.0])


def test_whitening():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    # mean 2, unbiased variance ((1 + 0 + 1) / 2) = 1 -> [-1, 0, 1]; the masked entry -> 0
    assert core.whiten(x, mask).tolist()[0] == pytest.approx([-1.0, 0.0, 1.0, 0.0], abs=1e-6)
    assert core.whiten(x, mask, shift_mean=False).tolist()[0] == pytest.approx([1.0, 2.0, 3.0, 0.0], abs=1e-6)
    # a reduce that doubles every sum is the same statistics (two identical processes)
    assert core.whiten(x, mask, reduce=lambda t: 2 * t).tolist()[0] == pytest.approx(
        [-1 / math.sqrt(0.8), 0.0, 1 / math.sqrt(0.8), 0.0], abs=1e-6)  # n = 6: variance 4 / 5


def test_kl_penalty_per_token_and_score_on_the_last_token():
    logp = torch.tensor([[-1.0, -1.0, -1.0, -1.0], [-1.0, -2.0, -3.0, -4.0]])
    ref = torch.tensor([[-1.5, -0.5, -1.0, -1.0], [-1.0, -1.0, -1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])  # row 1 ended at token 1 (EOS)
    rewards, kl = core.kl_penalised_rewards(logp, ref, torch.tensor([2.0, 3.0]), mask, kl_coef=0.1)
    assert kl.flatten().tolist() == pytest.approx([0.5, -0.5, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0])
    # -0.1 * kl on every token, the score added on the last response token only
    assert rewards.tolist()[0] == pytest.approx([-0.05, 0.05, 0.0, 2.0])
    assert rewards.tolist()[1] == pytest.approx([0.0, 0.1 + 3.0, 0.0, 0.0])


def test_response_mask_and_eos():
    ids = torch.tensor([[5, 2, 2, 7], [5, 6, 7, 8], [2, 9, 9, 9]])
    assert core.response_mask(ids, {2}).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert core.ended_with_eos(ids, {2}).tolist() == [True, False, True]


def test_policy_loss_at_the_clip_edges():
    old = torch.zeros(1, 4)
    # ratios 1.5, 1.2 (edge), 0.8 (edge), 0.5 with advantage +1
    new = torch.log(torch.tensor([[1.5, 1.2, 0.8, 0.5]]))
    adv = torch.ones(1, 4)
    mask = torch.ones(1, 4)
    loss, stats = core.policy_loss(new.clone().requires_grad_(), old, adv, mask, clip=0.2)
    # max(-rho, -clip(rho)): 1.5 -> -1.2 (clipped), 1.2 -> -1.2, 0.8 -> -0.8, 0.5 -> -0.5
    assert loss.item() == pytest.approx(-1.2 - 1.2 - 0.8 - 0.5, abs=1e-6)
    assert stats["clipfrac"].item() == 1.0  # only ratio 1.5 is clipped; the edges are not
    # with advantage -1 the other side clips: 0.5 -> max(0.5, 0.8) = 0.8
    loss, stats = core.policy_loss(new, old, -adv, mask, clip=0.2)
    assert loss.item() == pytest.approx(1.5 + 1.2 + 0.8 + 0.8, abs=1e-6)
    assert stats["clipfrac"].item() == 1.0
    # no gradient through the clipped token, gradient -rho through the others
    x = new.clone().requires_grad_()
    core.policy_loss(x, old, adv, mask, clip=0.2)[0].backward()
    assert x.grad.tolist()[0] == pytest.approx([0.0, -1.2, -0.8, -0.5], abs=1e-6)
    assert stats["approx_kl"].item() == pytest.approx(0.5 * sum(math.log(r) ** 2 for r in (1.5, 1.2, 0.8, 0.5)))


def test_value_loss_at_the_clip_edges():
    old = torch.zeros(1, 3)
    returns = torch.ones(1, 3)
    values = torch.tensor([[1.0, 0.2, -0.5]])
    mask = torch.ones(1, 3)
    loss, stats = core.value_loss(values, old, returns, mask, clip=0.2)
    # V=1: clipped to .2 -> max(0, .64); V=.2 (edge): both .64; V=-.5: clipped to -.2 -> max(2.25, 1.44)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.64 + 2.25), abs=1e-6)
    assert stats["vf_clipfrac"].item() == 1.0


def test_entropy():
    assert core.entropy_from_logits(torch.zeros(1, 4)).item() == pytest.approx(math.log(4))
    assert core.entropy_from_logits(torch.tensor([[0.0, -1e4]])).item() == pytest.approx(0.0, abs=1e-6)


def test_adaptive_kl_controller():
    c = core.AdaptiveKL(0.1, target=6.0, horizon=10000)
    c.update(12.0, 64)  # error clipped to 0.2
    assert c.value == pytest.approx(0.1 * (1 + 0.2 * 64 / 10000))
    c = core.AdaptiveKL(0.1, target=6.0, horizon=100)
    c.update(5.4, 10)  # error -0.1
    assert c.value == pytest.approx(0.1 * (1 - 0.1 * 10 / 100))
    fixed = core.AdaptiveKL(0.1)
    fixed.update(100.0, 64)
    assert fixed.value == 0.1


def test_running_moments():
    m = core.RunningMoments()
    m.update(torch.tensor([1.0, 3.0]))
    m.update(torch.tensor([5.0]))
    assert (m.mean, m.std) == pytest.approx((3.0, 2.0))
    assert m.normalise(torch.tensor([5.0])).item() == pytest.approx(1.0)
    copy = core.RunningMoments()
    copy.load(m.state())
    assert (copy.mean, copy.std, copy.count) == (m.mean, m.std, 3)
