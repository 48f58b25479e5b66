"""Reward model on AI preferences (RLAIF preference model, Bai et al. arXiv 2212.08073 sec. 4.1) with
TRL's RewardTrainer: ``AutoModelForSequenceClassification`` with one output, trained with the
Bradley-Terry loss on hard labels, or on the judge's soft labels ``p_chosen`` (align/losses.py).

The saved folder is a plain ``*ForSequenceClassification`` checkpoint with ``num_labels=1`` and
``pad_token_id`` set, which TRL (PPO/GRPO reward models) and vLLM (``task="reward"``/classify) load.
TRL renders each row ``prompt + chosen`` with the chat template and the model scores the rightmost
token that is not pad (for SmolLM2 the ``\n`` after ``<|im_end|>``); align/reward_scoring.py reads the
model the same way at inference (PPO).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from align.card import finish, resolve_model
from align.config import RewardRecipe
from align.data import AlignData, load_data
from align.losses import soft_bradley_terry_loss


@dataclass
class WithPChosen:
    """Wraps a TRL collator and adds the ``p_chosen`` column as a float tensor.

    TRL 1.16 drops every column outside the trainer's signature columns (``chosen_ids``,
    ``rejected_ids``, ``margin`` for RewardTrainer; ``prompt_ids``, ... for DPOTrainer) when
    ``remove_unused_columns`` is on, and its collators read only those keys; so the trainer is run
    with ``remove_unused_columns=False`` and this wrapper carries the label to ``compute_loss``.
    """

    base: Any

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.base(examples)
        batch["p_chosen"] = torch.tensor([float(e["p_chosen"]) for e in examples], dtype=torch.float32)
        return batch


def _soft_trainer_class():
    from trl import RewardTrainer

    class SoftLabelRewardTrainer(RewardTrainer):
        """RewardTrainer whose loss is the soft-label Bradley-Terry loss; written against TRL 1.16.0.

        Only ``compute_loss`` changes: it takes ``p_chosen`` out of the batch, lets TRL's own
        ``compute_loss`` run the forward pass and log its metrics (accuracy, margin, rewards), then
        replaces TRL's ``-log s(r_c - r_r)`` by ``-[p log s(r_c - r_r) + (1-p) log s(r_r - r_c)]``
        (plus TRL's optional reward-centering term, as TRL adds it).
        """

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            p_chosen = inputs.pop("p_chosen")
            _, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
            rewards_chosen, rewards_rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
            loss = soft_bradley_terry_loss(rewards_chosen, rewards_rejected, p_chosen).mean()
            if self.args.center_rewards_coefficient is not None:
                loss = loss + self.args.center_rewards_coefficient * torch.mean(
                    (rewards_chosen + rewards_rejected) ** 2)
            return (loss, outputs) if return_outputs else loss

    return SoftLabelRewardTrainer


def build_trainer(recipe: RewardRecipe, data: AlignData):
    """TRL's RewardTrainer (or the soft-label one) on ``data``, as ``train`` runs it; the model loads here."""
    from trl import RewardTrainer

    forced = {"remove_unused_columns": False} if recipe.soft_labels else {}
    args = recipe.trl_args(**forced)
    cls = _soft_trainer_class() if recipe.soft_labels else RewardTrainer
    trainer = cls(model=resolve_model(recipe.model), args=args, train_dataset=data.train, eval_dataset=data.eval)
    if recipe.soft_labels:
        trainer.data_collator = WithPChosen(trainer.data_collator)
    return trainer


def train(recipe: RewardRecipe) -> dict[str, Any]:
    """Train a reward model; returns the metrics written to metrics.json (eval_accuracy when held out)."""
    data = load_data(recipe.data, "reward", soft_labels=recipe.soft_labels, seed=recipe.seed)
    trainer = build_trainer(recipe, data)
    result = trainer.train()
    return finish(trainer, recipe, data, result)
