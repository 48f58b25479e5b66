"""The one engine interface: batch generation with n samples, and choice scoring.

Prompts are either chat messages (``list[{"role", "content"}]``; the engine applies the
model's chat template) or a raw string (sent as is, for judge prompts that end where an
option letter is read). Sampling parameters are always set explicitly: vLLM's server would
otherwise apply the model's generation_config.

Choice scoring reads the logprobs of the option tokens at ONE generated position
(``max_tokens=1``, top-``k`` logprobs), never ``prompt_logprobs`` (which disables vLLM's
prefix cache). An option not among the top-k is ``None``: no verdict, never a guess.
"""

from __future__ import annotations

import abc
import gc
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

Message = dict  # {"role": str, "content": str}
Prompt = str | list[Message]


@dataclass(frozen=True)
class Sampling:
    """Explicit sampling parameters; part of a run's spec."""

    n: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = 0
    stop: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"n": self.n, "temperature": self.temperature, "top_p": self.top_p,
                "max_tokens": self.max_tokens, "seed": self.seed, "stop": list(self.stop)}


@dataclass(frozen=True)
class Completion:
    text: str
    num_tokens: int
    finish_reason: str | None = None


@dataclass(frozen=True)
class ChoiceScores:
    """Log-probabilities of each option string at the first generated position."""

    logprobs: dict[str, float | None]
    top: dict[str, float] = field(default_factory=dict)  # the raw top-k (token text -> logprob)


class EngineError(RuntimeError):
    """The engine cannot serve (server down, deadline passed); never turned into a label."""


class Engine(Protocol):
    name: str
    model: str
    max_context: int

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[list[Completion]]: ...

    def score_choices(self, prompts: Sequence[str], options: Sequence[str], top_k: int = 20) -> list[ChoiceScores]: ...

    def count_tokens(self, prompt: Prompt) -> int: ...

    def stats(self) -> dict: ...

    def close(self) -> None: ...


class EngineBase(abc.ABC):
    """The base class of every engine: the built-in ones (``generator.engines.ENGINES``) and a user's own
    (``--engine module:Class``, or an ``rlaif.engines`` entry point), which must derive from it and
    implement the abstract methods; ``generator.engines.engine_class`` checks both before anything is
    called (tests/test_engine_registry.py). ``with make_engine(...) as engine:`` closes the engine on the way out.

    Subclasses set ``name`` (the engine kind recorded in every run), ``model`` and ``max_context``."""

    name: str
    model: str
    max_context: int

    @abc.abstractmethod
    def generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[list[Completion]]: ...

    @abc.abstractmethod
    def score_choices(self, prompts: Sequence[str], options: Sequence[str], top_k: int = 20) -> list[ChoiceScores]: ...

    @abc.abstractmethod
    def count_tokens(self, prompt: Prompt) -> int: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def stats(self) -> dict:
        return {}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


ClosingEngine = EngineBase  # the name the engines were first written against


def request_seed(seed: int | None, prompt: Prompt) -> int | None:
    """The per-request sampling seed of one prompt: a hash of the run's ``seed`` and the prompt's
    content (None when ``seed`` is None). Derived from content, not from a position in a batch, so
    a prompt samples the same text whether it is resumed, re-batched or sent to another replica,
    and two seeds give different samples (tests/test_engines.py)."""
    if seed is None:
        return None
    import hashlib
    import json

    text = prompt if isinstance(prompt, str) else json.dumps(list(prompt), sort_keys=True, ensure_ascii=False)
    return int(hashlib.sha256(f"{seed}\0{text}".encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def release_memory() -> None:
    """After dropping a model: collect it, and hand cached GPU memory back to the driver."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def add_logprob(top: dict[str, float], token: str, logprob: float) -> None:
    """Put one top-k token into ``top``; two ids that decode to the same text add up (log-sum-exp)."""
    if token not in top:
        top[token] = logprob
        return
    m = max(top[token], logprob)
    top[token] = m + math.log(math.exp(top[token] - m) + math.exp(logprob - m))


def option_logprobs(top: dict[str, float], options: Sequence[str]) -> dict[str, float | None]:
    """Fold top-k token logprobs into one logprob per option.

    Several tokens can spell the same option ("A", " A"); their probabilities add up
    (log-sum-exp). An option with no matching token among the top-k gets ``None``.
    """
    out: dict[str, float | None] = {}
    for opt in options:
        lps = [lp for tok, lp in top.items() if tok.strip() == opt and lp is not None and math.isfinite(lp)]
        if not lps:
            out[opt] = None
            continue
        m = max(lps)
        out[opt] = m + math.log(sum(math.exp(lp - m) for lp in lps))
    return out
