"""PPO against a reward model (``rlaif align ppo``): recipe in config.py, the arithmetic in core.py,
models and sampling in models.py, experience in rollout.py, the loop in trainer.py, checkpoints and
outputs in state.py."""

from __future__ import annotations

from typing import Any

import align.config  # noqa: F401 - first, so that align/config.py registers PPORecipe whichever module is imported first


def train(recipe) -> dict[str, Any]:
    """The align method entry point (align/__init__.py ALIGN_METHODS)."""
    from align.ppo.trainer import train as _train

    return _train(recipe)
