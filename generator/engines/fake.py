"""A canned, deterministic engine for unit tests of logic only (never for real data).

Test-only knob: ``RLAIF_FAKE_DELAY_S`` (seconds, default 0) sleeps before every ``generate`` and
``score_choices`` call, so a crash test can SIGKILL a CLI run mid-stage (tests/test_crash.py).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Sequence

from generator.engines.base import ChoiceScores, ClosingEngine, Completion, Prompt, Sampling, option_logprobs

DELAY_ENV = "RLAIF_FAKE_DELAY_S"


def _h(*parts) -> int:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:8], 16)


def _text(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


class FakeEngine(ClosingEngine):
    """``generate`` returns ``"<reply k> ..."`` texts derived from the prompt hash;
    ``score_choices`` calls ``scorer(prompt, options) -> {token: logprob}`` when given,
    else a deterministic hash-based distribution over the options."""

    name = "fake"

    def __init__(self, model: str = "fake-model", *, scorer: Callable[[str, Sequence[str]], dict] | None = None,
                 replies: Callable[[Prompt, int], str] | None = None, max_context: int = 2048, **_: object):
        self.model = model
        self.max_context = max_context
        self.scorer = scorer
        self.replies = replies
        self.calls = {"generate": 0, "score": 0}
        self.delay_s = float(os.environ.get(DELAY_ENV) or 0.0)  # test-only: lets a kill land mid-run

    def count_tokens(self, prompt: Prompt) -> int:
        return len(_text(prompt).split())

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[list[Completion]]:
        self.calls["generate"] += len(prompts)
        time.sleep(self.delay_s)
        out = []
        for p in prompts:
            samples = []
            for k in range(sampling.n):
                if self.replies:
                    text = self.replies(p, k)
                else:
                    words = _text(p).split()[-6:]
                    text = f"reply {_h(_text(p), k, sampling.seed) % 1000} about {' '.join(words)}"
                text = " ".join(text.split()[: sampling.max_tokens])
                samples.append(Completion(text=text, num_tokens=len(text.split()), finish_reason="stop"))
            out.append(samples)
        return out

    def score_choices(self, prompts: Sequence[str], options: Sequence[str], top_k: int = 20) -> list[ChoiceScores]:
        self.calls["score"] += len(prompts)
        time.sleep(self.delay_s)
        out = []
        for p in prompts:
            if self.scorer:
                top = dict(self.scorer(p, options))
            else:
                raw = [(_h(p, o) % 1000) / 250.0 for o in options]
                z = math.log(sum(math.exp(r) for r in raw))
                top = {o: r - z for o, r in zip(options, raw, strict=True)}
            out.append(ChoiceScores(logprobs=option_logprobs(top, options), top=top))
        return out

    def stats(self) -> dict:
        return dict(self.calls)

    def close(self) -> None:
        return None
