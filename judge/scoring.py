"""Pairwise constitution judging with option logprobs (arXiv 2212.08073, sec 4.1).

For each (pair, principle, order) the judge prompt ``judge/pairwise.jinja`` ends where the
option letter is read; the engine returns the top-k logprobs at that ONE position and

    p_a = exp(l_A) / (exp(l_A) + exp(l_B)) = 1 / (1 + exp(l_B - l_A))

(a softmax over the two options only, as the paper normalises over the choices). Votes are
kept as typed records (``Vote``) until the edge:

* order mapping: in order "ab" the pair's first response is option (A), so
  p_first = p_a; in order "ba" it is option (B), so p_first = 1 - p_a;
* per principle, the orders' p_first are averaged (cancels the position bias);
* principles are ensembled by the PLAIN mean over the K principle draws: the draws are
  already made in proportion to the constitution weights (``Constitution.sample_principles``,
  with replacement), so the weights act once and a principle's influence is its weight share;
  a principle drawn twice is judged once and counts twice. ``None`` votes are left out, and a
  pair without any scored vote gets ``p_first = None`` (unlabelled, never 0.5).

Layouts (``config.layout``): ``cai`` is the paper's prompt, ``judge/pairwise.jinja``: conversation,
principle, then the two responses. ``shared-prefix`` is ``judge/pairwise_shared.jinja``: conversation,
the two responses, then the principle's question, so the K principles of one (pair, order) share the
prompt up to the question and vLLM's prefix cache computes the responses once per order rather than
once per principle (tests/test_judge_layout.py::test_shared_prefix_prompts_share_the_token_prefix).
Prompts are sent sorted by their text, so prompts with the longest common prefix sit next to each
other in the engine's queue and the cache still holds the prefix when the next one needs it.

Batch calibration (``config.calibrate == "batch"``, arXiv 2309.17249, judge/calibration.py): each vote's
p_a is divided by the mean p_a of every scored vote of the RUN (both orders) and renormalised before the
orders are combined; the votes keep the value read as ``p_a_raw``. ``judge_pairs`` returns the verdicts
as read, whatever ``calibrate`` says: the prior covers the whole run, so the stage calibrates once every
pair is judged (``calibrate_verdicts``; judge/calibrated_run.py keeps the raw votes across batches).

CoT (``config.cot``): S rationales are sampled with ``judge/pairwise_cot.jinja``; the option
letter is read after each, each probability is clamped to [0.4, 0.6] (the paper's fix for
over-confident CoT labels) and the samples are averaged into the vote's ``p_a``.
"""

from __future__ import annotations

import bisect
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from generator.engines.base import ChoiceScores, Sampling
from judge.calibration import MIN_VOTES, Prior, apply_prior, estimate_prior, uncalibrated
from judge.config import JudgeConfig
from plumbing.chat import last_user_message
from prompts import PAIRWISE, PAIRWISE_COT, render

PAIRWISE_SHARED = "judge/pairwise_shared.jinja"
LAYOUT_TEMPLATES = {"cai": PAIRWISE, "shared-prefix": PAIRWISE_SHARED}


OPTIONS = ("A", "B")
COT_CLAMP = (0.4, 0.6)  # arXiv 2212.08073 sec 4.1: CoT probabilities clamped to 40-60 %
COT_STOP = ("\n\n",)
# Characters two prompts of one engine call may share beyond what is cached (about one 16-token
# block of English: less cannot be shared by a block prefix cache anyway).
WAVE_MARGIN = 64
# Prompts scheduled in waves together (consecutive in text order, so about 8 pairs x 4 principles x
# 2 orders): between a prefix's first use and its reuse the engine computes at most one group, so
# the prefix is still in vLLM's KV cache (1 GiB on CPU: about 23k tokens of the embedded model).
WAVE_GROUP = 64
# A rationale that already states the answer is cut there: the template adds its own "Therefore, ...".
_ANSWER_IN_RATIONALE = re.compile(r"(therefore,?\s*)?(the\s+)?(final\s+)?answer\s+is", re.IGNORECASE)


@dataclass(frozen=True)
class Pair:
    """Two responses to one conversation; ``first``/``second`` is the pair's own order."""

    id: str
    conversation: list[dict]
    first: str
    second: str


@dataclass(frozen=True)
class Vote:
    """One (principle, order) judgement. ``order`` "ab": the pair's first response was shown as
    option (A); "ba": swapped. ``p_a`` is P(option A is better) as shown, or None with ``reason``.
    ``raw`` keeps the top logprobs read (CoT: the rationales and per-sample probabilities).
    ``p_a_raw`` is the probability read when ``p_a`` was batch-calibrated, else None."""

    principle_id: str
    order: str
    p_a: float | None
    reason: str | None = None
    raw: dict = field(default_factory=dict)
    p_a_raw: float | None = None

    @property
    def p_first(self) -> float | None:
        """P(the pair's first response is better): p_a in order "ab", 1 - p_a in "ba"."""
        if self.p_a is None:
            return None
        return self.p_a if self.order == "ab" else 1.0 - self.p_a

    def swapped(self) -> Vote:
        """The same vote seen from a pair whose first/second are exchanged (p_a is unchanged:
        it describes what the judge saw; only which response sat in (A) is relabelled)."""
        return Vote(self.principle_id, "ba" if self.order == "ab" else "ab", self.p_a, self.reason, self.raw,
                    self.p_a_raw)

    def to_record(self) -> dict:
        """The ``VOTE`` feature of the preference schema (judge/records.py); ``p_a_raw`` is None unless
        the vote was calibrated (``p_a`` is then the calibrated value)."""
        return {"principle_id": self.principle_id, "order": self.order, "p_a": self.p_a, "reason": self.reason,
                "p_a_raw": self.p_a_raw}


@dataclass(frozen=True)
class PairVerdict:
    """The ensembled verdict on one pair; ``p_first`` is None (with ``reason``) when unlabelled."""

    p_first: float | None
    votes: tuple[Vote, ...]
    principle_ids: tuple[str, ...]
    position_consistent: bool | None
    reason: str | None = None
    p_first_raw: float | None = None  # from the votes as read, when they were calibrated


def two_option_probability(lp_a: float, lp_b: float) -> float:
    """Softmax over the two options: exp(lA) / (exp(lA) + exp(lB)), computed stably."""
    d = lp_b - lp_a
    if d > 0:
        e = math.exp(-d)
        return e / (1.0 + e)
    return 1.0 / (1.0 + math.exp(d))


def vote_from_scores(principle_id: str, order: str, scores: ChoiceScores, top_k: int = 20) -> Vote:
    """A vote from one scored position. If EITHER option is missing from the top-k, the vote is
    None: the missing option's logprob is only bounded (below the k-th logprob), so any p_a
    would be a guess, and a bound is not a probability. ``raw`` keeps the top-k for analysis."""
    lp_a, lp_b = (scores.logprobs.get(o) for o in OPTIONS)
    missing = [o for o, lp in zip(OPTIONS, (lp_a, lp_b), strict=True) if lp is None]
    if missing:
        what = f"option {missing[0]}" if len(missing) == 1 else "options A and B"
        return Vote(principle_id, order, None, f"{what} not in top-{top_k} logprobs", dict(scores.top))
    return Vote(principle_id, order, two_option_probability(lp_a, lp_b), None, dict(scores.top))


def clamp(p: float, lo: float = COT_CLAMP[0], hi: float = COT_CLAMP[1]) -> float:
    return min(hi, max(lo, p))


def cot_vote(principle_id: str, order: str, samples: Sequence[tuple[str, ChoiceScores]], top_k: int = 20) -> Vote:
    """Average of the clamped per-rationale probabilities (arXiv 2212.08073 sec 4.1).
    Samples whose option letter cannot be read are left out; none readable -> None."""
    probs, raw_samples, reasons = [], [], []
    for rationale, scores in samples:
        v = vote_from_scores(principle_id, order, scores, top_k)
        p = clamp(v.p_a) if v.p_a is not None else None
        if p is None:
            reasons.append(v.reason)
        else:
            probs.append(p)
        raw_samples.append({"rationale": rationale, "p_a": p, "top": dict(scores.top)})
    raw = {"samples": raw_samples}
    if not probs:
        return Vote(principle_id, order, None, f"no CoT sample scorable ({reasons[0] if reasons else 'no samples'})",
                    raw)
    return Vote(principle_id, order, sum(probs) / len(probs), None, raw)


def principle_probability(votes: Sequence[Vote]) -> float | None:
    """Mean over orders of p_first for one principle's votes; None votes excluded."""
    ps = [v.p_first for v in votes if v.p_first is not None]
    return sum(ps) / len(ps) if ps else None


def ensemble(votes: Sequence[Vote], draws: Sequence[str]) -> float | None:
    """Plain mean of the per-principle probabilities over the principle ``draws`` (ids, repeats
    allowed: a principle drawn twice counts twice); draws whose principle has no scored vote
    are left out. The weights already acted in the draw (module docstring)."""
    per_principle = {pid: principle_probability([v for v in votes if v.principle_id == pid])
                     for pid in dict.fromkeys(draws)}
    ps = [per_principle[pid] for pid in draws if per_principle[pid] is not None]
    return sum(ps) / len(ps) if ps else None


def position_consistency(votes: Sequence[Vote]) -> bool | None:
    """True when, for every principle scored in both orders, the same response wins in both
    (p_a > 0.5 in "ab" and p_a < 0.5 in "ba", or the reverse); None if no principle has both."""
    checks = []
    for pid in dict.fromkeys(v.principle_id for v in votes):
        by_order = {v.order: v.p_a for v in votes if v.principle_id == pid and v.p_a is not None}
        if "ab" in by_order and "ba" in by_order:
            ab, ba = by_order["ab"], by_order["ba"]
            checks.append((ab > 0.5 and ba < 0.5) or (ab < 0.5 and ba > 0.5))
    return all(checks) if checks else None


def make_verdict(votes: Sequence[Vote], principle_ids: Sequence[str]) -> PairVerdict:
    """``principle_ids`` are the pair's principle draws (repeats allowed)."""
    p = ensemble(votes, principle_ids)
    reason = None
    if p is None:
        reasons = list(dict.fromkeys(v.reason for v in votes if v.reason))
        reason = "no vote could be scored: " + ("; ".join(reasons[:3]) if reasons else "no votes")
    raw = ensemble(uncalibrated(votes), principle_ids) if any(v.p_a_raw is not None for v in votes) else None
    return PairVerdict(p, tuple(votes), tuple(principle_ids), position_consistency(votes), reason, raw)


def calibrate_verdicts(verdicts: Sequence[PairVerdict], prior: Prior | None = None,
                       min_votes: int = MIN_VOTES) -> tuple[list[PairVerdict], Prior]:
    """The verdicts re-made from their votes batch-calibrated (arXiv 2309.17249; the votes must be raw)
    by ``prior``, by default the one estimated over all of these verdicts' votes; and the prior used.
    With fewer than ``min_votes`` scored votes the prior is not applied and the verdicts stay as read."""
    flat = [v for verdict in verdicts for v in verdict.votes]
    prior = prior if prior is not None else estimate_prior(flat, min_votes)
    if not prior.applied:
        apply_prior(flat, prior)  # still refuses votes calibrated already
        return list(verdicts), prior
    calibrated = iter(apply_prior(flat, prior))
    return ([make_verdict([next(calibrated) for _ in verdict.votes], verdict.principle_ids) for verdict in verdicts],
            prior)


def raw_verdicts(verdicts: Sequence[PairVerdict]) -> list[PairVerdict]:
    """The verdicts re-made from their votes as read (calibration undone)."""
    return [make_verdict(uncalibrated(verdict.votes), verdict.principle_ids) for verdict in verdicts]


# --- prompts --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
    pair: int
    principle_id: str
    order: str
    context: dict  # template variables (without few_shot / rationale)


def _few_shot(constitution) -> list[dict]:
    """The constitution's worked comparisons (principle texts rendered) for ``few_shot``."""
    if hasattr(constitution, "few_shot_compare"):
        return constitution.few_shot_compare()
    return []


def build_tasks(constitution, pairs: Sequence[Pair], config: JudgeConfig) -> tuple[list[_Task], list[list[str]]]:
    """(pair, principle, order) tasks with their template variables, and each pair's principle draws.
    Principles are drawn per pair by weight, deterministically for (seed, pair id); each distinct
    principle is judged once."""
    k = config.principles_per_pair
    orders = ("ab", "ba") if config.orders == "both" else ("ab",)
    tasks, principle_ids = [], []
    for i, pair in enumerate(pairs):
        principles = constitution.sample_principles(k, seed=config.seed, key=pair.id)
        principle_ids.append([p.id for p in principles])
        texts = {p.id: constitution.render(p, "compare", prompt=last_user_message(pair.conversation),
                                           conversation=pair.conversation) for p in principles}
        for order in orders:
            a, b = (pair.first, pair.second) if order == "ab" else (pair.second, pair.first)
            for pid, text in texts.items():
                tasks.append(_Task(i, pid, order, {"conversation": pair.conversation, "principle": text,
                                                   "response_a": a, "response_b": b}))
    return tasks, principle_ids


def _lcp(a: str, b: str) -> int:
    return len(os.path.commonprefix((a, b)))


def _covered(done: list[str], prompt: str) -> int:
    """The longest prefix ``prompt`` shares with a prompt already sent (``done`` sorted: the
    longest common prefix is with a sorted neighbour)."""
    k = bisect.bisect_left(done, prompt)
    return max((_lcp(done[j], prompt) for j in (k - 1, k) if 0 <= j < len(done)), default=0)


def cache_waves(prompts: Sequence[str], margin: int = WAVE_MARGIN) -> list[list[int]]:
    """The prompts' indices in waves, each wave one engine call, so that the prefix cache computes
    each shared prefix ONCE. vLLM schedules the prompts of one call together, and two prompts
    prefilled in the same step both compute the prefix they share; so a wave never holds two prompts
    that share more than ``margin`` characters beyond what earlier waves computed, and the later
    one waits for the next wave, where that prefix is cached. Within a wave the prompts are in text
    order (neighbours share the most). With ``margin=0`` the characters sent afresh equal those of
    sending the prompts one by one in text order
    (tests/test_judge_layout.py::test_cache_waves_send_each_shared_prefix_once); a handful of waves
    per batch (the few-shot block, each pair's conversation, each (pair, order)'s responses, ...)."""
    pending = sorted(range(len(prompts)), key=prompts.__getitem__)
    done: list[str] = []
    waves: list[list[int]] = []
    while pending:
        wave, deferred, last = [], [], None
        for i in pending:
            # Members of the wave come before prompts[i] in text order: the last shares the most with it.
            if last is not None and _lcp(prompts[last], prompts[i]) > _covered(done, prompts[i]) + margin:
                deferred.append(i)
                continue
            wave.append(i)
            last = i
        waves.append(wave)
        for i in wave:
            bisect.insort(done, prompts[i])
        pending = deferred
    return waves


def _too_long(engine, prompt: str, budget: int) -> str | None:
    """A reason when the prompt cannot fit (the engine would fail the whole batch), else None."""
    if not engine.max_context:  # a server that does not say: let it answer
        return None
    n = engine.count_tokens(prompt)
    if n + budget > engine.max_context:
        return f"judge prompt too long ({n} tokens + {budget} > max context {engine.max_context})"
    return None


def _score_prompts(engine, prompts: list[str], budget: int, top_k: int,
                   waves: bool = True) -> list[ChoiceScores | str]:
    """``score_choices`` for every prompt that fits, in ``cache_waves`` (``waves=False``: one call,
    for prompts whose shared prefixes an earlier call computed); a reason string for the others."""
    out: list[ChoiceScores | str] = [_too_long(engine, p, budget) or "" for p in prompts]
    fit = [i for i, r in enumerate(out) if not r]
    if not waves:
        groups = [fit] if fit else []
    else:  # text order keeps each pair's prompts together; a group's prefixes fit in the KV cache
        ordered = sorted(fit, key=prompts.__getitem__)
        groups = [ordered[k:k + WAVE_GROUP] for k in range(0, len(ordered), WAVE_GROUP)]
    for group in groups:
        for wave in cache_waves([prompts[i] for i in group]) if waves else [list(range(len(group)))]:
            scored = engine.score_choices([prompts[group[j]] for j in wave], OPTIONS, top_k=top_k)
            for j, s in zip(wave, scored, strict=True):
                out[group[j]] = s
    return out


def render_direct(tasks: Sequence[_Task], few_shot: list[dict], config: JudgeConfig) -> list[str]:
    """The option-letter prompt of each task in ``config``'s layout."""
    template = LAYOUT_TEMPLATES[config.resolved_layout]
    return [render(template, config.templates, few_shot=few_shot, **t.context) for t in tasks]


def _score_direct(engine, tasks: list[_Task], few_shot: list[dict], config: JudgeConfig) -> list[Vote]:
    prompts = render_direct(tasks, few_shot, config)
    votes = []
    for t, s in zip(tasks, _score_prompts(engine, prompts, 1, config.top_k), strict=True):
        votes.append(Vote(t.principle_id, t.order, None, s) if isinstance(s, str)
                     else vote_from_scores(t.principle_id, t.order, s, config.top_k))
    return votes


def clean_rationale(text: str) -> str:
    """Cut a rationale where it starts stating the answer (the template adds that line)."""
    m = _ANSWER_IN_RATIONALE.search(text)
    return (text[: m.start()] if m else text).strip()


def _score_cot(engine, tasks: list[_Task], config: JudgeConfig) -> list[Vote]:
    """S sampled rationales per task (one ``generate`` call), then one ``score_choices`` call."""
    sampling = Sampling(n=config.cot_samples, temperature=config.cot_temperature, top_p=1.0,
                        max_tokens=config.cot_max_tokens, seed=config.seed, stop=COT_STOP)
    bases = [render(PAIRWISE_COT, config.templates, **t.context) for t in tasks]
    too_long = [_too_long(engine, p, config.cot_max_tokens + 16) for p in bases]
    fit = [i for i, r in enumerate(too_long) if r is None]
    rationales: dict[int, list[str]] = {}
    if fit:
        for i, comps in zip(fit, engine.generate([bases[i] for i in fit], sampling), strict=True):
            rationales[i] = [clean_rationale(c.text) for c in comps]
    flat = [(i, r) for i in fit for r in rationales[i]]
    prompts = [render(PAIRWISE_COT, config.templates, rationale=r, **tasks[i].context) for i, r in flat]
    scored = _score_prompts(engine, prompts, 1, config.top_k, waves=False)  # bases cached by generate
    samples: dict[int, list[tuple[str, ChoiceScores]]] = {i: [] for i in fit}
    for (i, r), s in zip(flat, scored, strict=True):
        if isinstance(s, str):  # rationale pushed it past the context: an unreadable sample
            s = ChoiceScores(logprobs=dict.fromkeys(OPTIONS), top={})
        samples[i].append((r, s))
    return [Vote(t.principle_id, t.order, None, too_long[i]) if too_long[i]
            else cot_vote(t.principle_id, t.order, samples[i], config.top_k) for i, t in enumerate(tasks)]


def judge_pairs(engine, constitution, pairs: Sequence[Pair], config: JudgeConfig) -> list[PairVerdict]:
    """Judge every pair: ALL (pair, principle, order) prompts go to the engine in one
    ``score_choices`` call (CoT: one ``generate`` + one ``score_choices``), so vLLM batches
    them and its prefix cache shares the few-shot block and each pair's conversation (with the
    shared-prefix layout, each (pair, order)'s responses too). The verdicts are as read, also with
    ``calibrate="batch"``: its prior is estimated over the whole run, not one call (module docstring)."""
    if not pairs:
        return []
    tasks, principle_ids = build_tasks(constitution, pairs, config)
    votes = _score_cot(engine, tasks, config) if config.cot else \
        _score_direct(engine, tasks, _few_shot(constitution), config)
    by_pair: list[list[Vote]] = [[] for _ in pairs]
    for t, v in zip(tasks, votes, strict=True):
        by_pair[t.pair].append(v)
    return [make_verdict(by_pair[i], principle_ids[i]) for i in range(len(pairs))]


def templates_used(config: JudgeConfig) -> list[str]:
    """The template files this config renders (their hash goes into the run spec)."""
    return [PAIRWISE_COT] if config.cot else [LAYOUT_TEMPLATES[config.resolved_layout]]
