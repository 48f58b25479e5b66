"""Soft-label preference losses as plain functions (tensors in, per-example losses out).

The judge gives each pair a probability ``p = p_chosen`` in [0.5, 1] that ``chosen`` is better
(judge/records.py). A hard label throws that away; these losses train towards it instead.
Both reduce to TRL's hard losses at ``p = 1`` (tests/test_align_losses.py checks the values;
tests/test_align_dpo_trl.py checks the cDPO trainer against TRL's own DPOTrainer on a batch).

Notation: ``s`` is the logistic sigmoid, ``log s(x) = -softplus(-x)``. Useful identity:
``log s(x) - log s(-x) = x``, so ``-log s(-x) = -log s(x) + x``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_bradley_terry_loss(rewards_chosen: torch.Tensor, rewards_rejected: torch.Tensor,
                            p_chosen: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry reward-model loss with a soft label, per example.

    Bradley & Terry (1952); the RLHF reward model of Ouyang et al. (arXiv 2203.02155) trains on
    hard labels, ``-log s(r_c - r_r)``. With the judge's probability ``p`` as the target, it is the
    binary cross-entropy between ``p`` and ``s(r_c - r_r)``::

        L = -[p log s(r_c - r_r) + (1 - p) log s(r_r - r_c)]

    Worked example: ``r_c - r_r = 1``, ``p = 0.8``; ``-log s(1) = 0.31326``, ``-log s(-1) = 1.31326``::

        L = 0.8 * 0.31326 + 0.2 * 1.31326 = 0.25061 + 0.26265 = 0.51326

    At ``p = 1`` it is ``-log s(1) = 0.31326``, TRL RewardTrainer's hard loss. Its minimum over the
    margin is at ``s(r_c - r_r) = p``, i.e. ``r_c - r_r = logit(p)``: a pair the judge found a
    toss-up (p = 0.5) pulls the margin to 0 rather than to +infinity.
    """
    margin = rewards_chosen - rewards_rejected
    p = p_chosen.to(margin.dtype)
    return -(p * F.logsigmoid(margin) + (1.0 - p) * F.logsigmoid(-margin))


def conservative_dpo_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor,
                          p_chosen: torch.Tensor, beta: float) -> torch.Tensor:
    """Conservative DPO (cDPO) with a per-example flip probability ``eps = 1 - p_chosen``, per example.

    DPO (Rafailov et al., arXiv 2305.18290) with ``h = [log pi(y_c|x) - log ref(y_c|x)]
    - [log pi(y_r|x) - log ref(y_r|x)]`` minimises ``-log s(beta h)``. cDPO (Mitchell, "A note on
    DPO with noisy preferences", 2023) assumes each label is flipped with probability ``eps``::

        L = -(1 - eps) log s(beta h) - eps log s(-beta h)
          = -log s(beta h) + eps * beta * h            (identity above)

    Here ``eps_i = 1 - p_chosen_i``: the judge's own uncertainty per pair, instead of one global
    ``label_smoothing``. Worked example: ``beta = 0.1``, ``h = 10`` (so ``beta h = 1``), ``p = 0.8``::

        L = 0.8 * 0.31326 + 0.2 * 1.31326 = 0.51326  (= 0.31326 + 0.2 * 1)

    At ``p = 1`` it is ``-log s(beta h)``, TRL DPOTrainer's ``loss_type="sigmoid"``. Its gradient
    vanishes at ``s(beta h) = p``, so the implicit reward margin stops at ``logit(p)`` instead of
    growing without bound on confident-but-noisy labels.
    """
    logits = beta * (chosen_logratios - rejected_logratios)
    eps = 1.0 - p_chosen.to(logits.dtype)
    return -(1.0 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits)
