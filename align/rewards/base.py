"""The typed per-sample result every verifiable reward keeps until the edge, and the helpers that
turn TRL's inputs (string or conversational completions, per-row columns) into it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RewardResult:
    """One sample's verdict. ``score`` None means "cannot be scored" (``reason`` says why)."""

    score: float | None
    status: str
    reason: str = ""
    raw: Any = None


def completion_text(completion: Any) -> str:
    """A completion as text: a string, or the content of the last message of a conversational one
    (TRL passes ``[{"role": "assistant", "content": ...}]``)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        if isinstance(content, list):  # multimodal parts: keep the text ones
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return str(content)
    raise TypeError(f"completion must be a string or a list of messages, got {type(completion).__name__}")


def column(columns: dict[str, Any], name: str, n: int, reward: str) -> list[Any]:
    """The per-row column ``name`` (one value per completion), or a clear error naming the reward."""
    if name not in columns:
        raise KeyError(f"reward '{reward}' needs a '{name}' column in the dataset; "
                       f"columns present: {sorted(columns)}")
    values = list(columns[name])
    if len(values) != n:
        raise ValueError(f"reward '{reward}': column '{name}' has {len(values)} values for {n} completions")
    return values


def scores(results: Sequence[RewardResult]) -> list[float | None]:
    """The edge: floats for the trainer, None where there is no verdict."""
    return [r.score for r in results]


def per_row(score_one: Callable[..., RewardResult], column_name: str, reward: str):
    """TRL reward function ``f(prompts, completions, **columns)`` from ``score_one(text, gold)``,
    plus ``results(...)`` giving the typed records."""

    def results(prompts, completions, **columns) -> list[RewardResult]:
        gold = column(columns, column_name, len(completions), reward)
        return [score_one(completion_text(c), g) for c, g in zip(completions, gold, strict=True)]

    def reward_fn(prompts, completions, **columns) -> list[float | None]:
        return scores(results(prompts, completions, **columns))

    reward_fn.__name__ = reward_fn.__qualname__ = reward
    reward_fn.results = results
    return reward_fn
