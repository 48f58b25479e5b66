"""Supervised fine-tuning on revisions (SL-CAI, Bai et al. arXiv 2212.08073 sec. 3) with TRL's SFTTrainer.

The revise run's ``messages`` column (user turn + final revision) is TRL's conversational
language-modelling format, so SFTTrainer reads it unchanged and applies the model's chat template.
"""

from __future__ import annotations

from typing import Any

from align.card import finish, resolve_model
from align.config import SFTRecipe
from align.data import load_data


def train(recipe: SFTRecipe) -> dict[str, Any]:
    """Fine-tune ``recipe.model`` on the revisions; returns the metrics written to metrics.json."""
    from trl import SFTTrainer

    data = load_data(recipe.data, "sft", seed=recipe.seed)  # checks the data before any model loads
    args = recipe.trl_args()
    trainer = SFTTrainer(model=resolve_model(recipe.model), args=args,
                         train_dataset=data.train, eval_dataset=data.eval)
    result = trainer.train()
    return finish(trainer, recipe, data, result)
