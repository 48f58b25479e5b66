"""Soft-label losses against hand-worked values (the arithmetic is in align/losses.py docstrings)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from align.losses import conservative_dpo_loss, soft_bradley_terry_loss

NLS1 = 0.31326168751822286   # -log s(1)  = log(1 + e^-1)
NLS_1 = 1.3132616875182228   # -log s(-1) = log(1 + e)


def test_constants_are_what_the_docstrings_say():
    assert math.log1p(math.exp(-1)) == pytest.approx(NLS1, abs=1e-12)
    assert math.log1p(math.exp(1)) == pytest.approx(NLS_1, abs=1e-12)


def test_soft_bt_hand_worked():
    # r_c - r_r = 1, p = 0.8: 0.8 * 0.31326 + 0.2 * 1.31326 = 0.51326
    loss = soft_bradley_terry_loss(torch.tensor([1.5]), torch.tensor([0.5]), torch.tensor([0.8]))
    assert loss.item() == pytest.approx(0.51326, abs=1e-5)
    # a toss-up: p = 0.5, margin 0 -> log 2
    loss = soft_bradley_terry_loss(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.5]))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)


def test_soft_bt_reduces_to_hard_at_p1():
    rc, rr = torch.tensor([1.0, -0.3, 2.0]), torch.tensor([0.0, 0.4, -1.0])
    soft = soft_bradley_terry_loss(rc, rr, torch.ones(3))
    hard = -F.logsigmoid(rc - rr)  # TRL 1.16 RewardTrainer.compute_loss, per example
    torch.testing.assert_close(soft, hard)
    assert soft[0].item() == pytest.approx(NLS1, abs=1e-6)


def test_soft_bt_minimum_is_at_logit_p():
    margin = torch.tensor([0.0], requires_grad=True)
    opt = torch.optim.SGD([margin], lr=1.0)
    for _ in range(300):
        opt.zero_grad()
        soft_bradley_terry_loss(margin, torch.zeros(1), torch.tensor([0.8])).sum().backward()
        opt.step()
    assert margin.item() == pytest.approx(math.log(0.8 / 0.2), abs=1e-3)


def test_cdpo_hand_worked():
    # beta = 0.1, h = (2 - (-3)) - (1 - 6) = 10 -> beta h = 1, p = 0.8 (eps = 0.2): 0.51326
    loss = conservative_dpo_loss(torch.tensor([2.0 - (-3.0)]), torch.tensor([1.0 - 6.0]), torch.tensor([0.8]), 0.1)
    assert loss.item() == pytest.approx(0.51326, abs=1e-5)
    # identity: -log s(beta h) + eps * beta * h = 0.31326 + 0.2
    assert loss.item() == pytest.approx(NLS1 + 0.2, abs=1e-6)


def test_cdpo_reduces_to_sigmoid_dpo_at_p1():
    cl, rl = torch.tensor([0.5, -2.0, 4.0]), torch.tensor([-0.5, 1.0, 3.0])
    soft = conservative_dpo_loss(cl, rl, torch.ones(3), beta=0.1)
    hard = -F.logsigmoid(0.1 * (cl - rl))  # TRL 1.16 DPOTrainer loss_type="sigmoid", per example
    torch.testing.assert_close(soft, hard)
    # and is different when p < 1 (so the soft path really is used)
    assert not torch.allclose(conservative_dpo_loss(cl, rl, torch.full((3,), 0.7), beta=0.1), hard)


def test_cdpo_gradient_is_per_example():
    h = torch.tensor([10.0, 10.0], requires_grad=True)
    conservative_dpo_loss(h, torch.zeros(2), torch.tensor([1.0, 0.5]), beta=0.1).sum().backward()
    # dL/dh = beta * (s(beta h) - (1 - eps)) = 0.1 * (s(1) - p): p=1 -> -0.026894, p=0.5 -> +0.023106
    s1 = 1 / (1 + math.exp(-1))
    assert h.grad[0].item() == pytest.approx(0.1 * (s1 - 1.0), abs=1e-6)
    assert h.grad[1].item() == pytest.approx(0.1 * (s1 - 0.5), abs=1e-6)
