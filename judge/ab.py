"""``rlaif constitution ab``: what a constitution edit does to the judge's agreement with human labels.

One sample of labelled pairs (HH-RLHF rows, arXiv 2204.05862, the human-chosen reply first; or a judge
run, its ``chosen`` first) is judged under the OLD constitution (A) and the NEW one (B) by the same judge,
in both option orders, scored as ``rlaif judge-eval`` scores (judge/scoring.py: ``build_tasks``, the
option-logprob votes, the plain mean over the principle draws). The comparison is PAIRED, so the
principle draws are coupled across the two files:

* each of a pair's K draws is an exponential race: principle ``i`` gets the clock
  ``-log(u_i) / w_i`` with ``u_i`` uniform from ``sha256(seed, pair id, principle id, draw index)``, and
  the smallest clock wins. The winner is principle ``i`` with probability ``w_i / sum(w)`` (the minimum
  of independent exponentials; Efraimidis & Spirakis 2006), draws are independent, so this is the
  weighted draw with replacement of ``Constitution.sample_principles``, with other random numbers;
* a principle's clocks depend on its id and weight only, not on its text or on the other principles:
  with the same ids and weights both files draw the same principles for every pair, a reworded
  principle is drawn for exactly the same pairs, and adding, removing or reweighting a principle
  changes only the draws that principle wins or loses
  (tests/test_constitution_ab.py::test_paired_draws_change_only_where_the_edit_wins);
* a principle only renamed (``renames``: a new id whose compare text is that of exactly one dropped id)
  keeps its old id's clocks, so it too is drawn for the same pairs; renamed and reworded at once, it is
  a principle removed and another added.

Votes are cached by what they depend on (judge/ab_cache.py), so a principle whose text is the same in
both files is judged once, and a re-run after editing one principle judges only that principle's votes.
The statistics are judge/ab_stats.py's; judge/ab_report.py writes metrics.json, report.md, pairs.jsonl,
flips.jsonl and the plots. Everything a user can get wrong (the files, the constitutions, ``--principles``, the
output and cache folders, the templates) is checked before any model loads.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from judge.config import JudgeConfig
from judge.errors import JudgeError

log = logging.getLogger(__name__)


class ABConfig(BaseModel):
    """One A/B comparison: two constitution files, the labelled pairs, the judge settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    old: Path = Field(description="Constitution A (YAML), the one in use.")
    new: Path = Field(description="Constitution B (YAML), the edited one.")
    human: Path = Field(description="Labelled pairs: an HH-RLHF file (rows {'chosen', 'rejected'} transcripts, "
                                    "jsonl/json/parquet/csv, .gz ok) or a judge run (its chosen reply is the label).")
    out: Path = Field(description="Folder for report.md, metrics.json, flips.jsonl and the plots: new, empty, or "
                                  "an earlier ab output (replaced only with overwrite; its vote cache is reused).")
    cache: Path | None = Field(None, description="Vote cache folder, shareable between runs; default <out>/cache.")
    overwrite: bool = Field(False, description="Replace an earlier ab output in `out` (never anything else).")
    limit: int | None = Field(None, ge=1, description="Judge at most this many pairs (the first ones).")
    principles: list[str] | None = Field(None, description="Judge with these principle ids only (each must be in "
                                                            "OLD or NEW); default: all.")
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="The judge (model, engine, layout, seed, "
                                                                         "principles per pair, ...).")
    n_bins: int = Field(10, ge=2, description="Equal-width bins of the top-label ECE.")
    resamples: int = Field(1000, ge=100, description="Bootstrap resamples over pairs (seeded by judge.seed).")

    @model_validator(mode="after")
    def _comparable(self) -> ABConfig:
        jc = self.judge
        if jc.orders != "both" or jc.cot or jc.calibrate != "none":
            raise ValueError("constitution ab judges both orders with option logprobs, uncalibrated; leave "
                             "judge.orders, judge.cot and judge.calibrate at their defaults")
        if self.principles is not None and not [p for p in self.principles if p]:
            raise ValueError("--principles names no principle id; give ids separated by commas, e.g. harm-general")
        return self


# --- principle draws ------------------------------------------------------------------------------


def _uniform(*parts: object) -> float:
    """A number in (0, 1) from the sha256 of ``parts``: the same parts give the same number anywhere."""
    digest = hashlib.sha256(repr(parts).encode("utf-8")).digest()
    return (int.from_bytes(digest[:8], "big") + 0.5) / 2.0**64


def paired_draws(principles: Sequence, k: int, seed: int, key: str, clock_ids: dict[str, str] | None = None) -> list:
    """``k`` weighted draws with replacement among ``principles`` for item ``key`` (module docstring); a
    principle's clocks are those of its id, or of ``clock_ids[id]`` (the id it had before a rename)."""
    def clock(p, j: int) -> tuple[float, str]:
        cid = (clock_ids or {}).get(p.id, p.id)
        return -math.log(_uniform(seed, key, cid, j)) / p.weight, cid

    return [min(principles, key=lambda p, j=j: clock(p, j)) for j in range(k)]


def renames(a, b) -> dict[str, str]:
    """NEW id -> OLD id of the principles only renamed: a NEW id absent from OLD whose compare text is that of
    exactly one OLD id absent from NEW, and of no other new id."""
    new_ids, old_ids = {p.id for p in b.principles}, {p.id for p in a.principles}
    dropped = [p for p in a.principles if p.id not in new_ids]
    added = [p for p in b.principles if p.id not in old_ids]
    out = {}
    for p in added:
        same = [q.id for q in dropped if q.compare == p.compare]
        if len(same) == 1 and [q.compare for q in added].count(p.compare) == 1:
            out[p.id] = same[0]
    return out


class DrawnConstitution:
    """A constitution whose principles are drawn by ``paired_draws`` among ``ids`` (all by default); what
    ``judge.scoring.build_tasks`` reads of a constitution: ``sample_principles``, ``render``."""

    def __init__(self, constitution, ids: Sequence[str] | None = None, clock_ids: dict[str, str] | None = None):
        self.constitution = constitution
        self.principles = [p for p in constitution.principles if ids is None or p.id in ids]
        self.clock_ids = clock_ids

    def sample_principles(self, k: int, seed: int, key: str = "") -> list:
        return paired_draws(self.principles, k, seed, key, self.clock_ids)

    def render(self, principle, field, **item) -> str:
        return self.constitution.render(principle, field, **item)

    def few_shot_compare(self) -> list[dict]:
        return self.constitution.few_shot_compare()


# --- inputs ---------------------------------------------------------------------------------------


def read_labelled_pairs(path: Path, limit: int | None):
    """The pairs with the labelled-better reply first (``judge.evaluate.HumanPairs``) and what the label is."""
    from judge.evaluate import HumanPairs, read_human_pairs
    from judge.scoring import Pair
    from plumbing.runs import MANIFEST, load, read_manifest

    if not path.is_dir():
        return read_human_pairs(path, 0, limit), "human (HH-RLHF chosen)"
    stage = read_manifest(path).get("stage") if (path / MANIFEST).is_file() else None
    if stage != "judge":
        raise JudgeError(f"--human {path} is a folder but not a judge run; give an HH-RLHF file or a judge run")
    rows = load(path)
    rows = rows.select(range(min(limit or len(rows), len(rows))))
    if not len(rows):
        raise JudgeError(f"--human {path}: the judge run holds no rows")
    pairs = [Pair(r["id"], [{"role": m["role"], "content": m["content"]} for m in r["prompt"]],
                  r["chosen"][-1]["content"], r["rejected"][-1]["content"]) for r in rows]
    return HumanPairs(pairs, len(rows), []), f"chosen of the judge run {path}"


def load_both(config: ABConfig) -> tuple:
    """Both constitutions, linted (an error raises; warnings are logged), and the principle ids judged."""
    from constitution import lint, load_constitution

    loaded = []
    for path in (config.old, config.new):
        report = lint(path)
        for warning in report.warnings:
            log.warning("%s: %s", path, warning)
        loaded.append(load_constitution(path))
    a, b = loaded
    known = list(dict.fromkeys([p.id for p in a.principles] + [p.id for p in b.principles]))
    ids = None
    if config.principles is not None:
        ids = [p for p in dict.fromkeys(config.principles) if p]
        unknown = [p for p in ids if p not in known]
        if unknown:
            raise JudgeError(f"--principles: {unknown[0]!r} is in neither {config.old} nor {config.new}; known ids: "
                             f"{', '.join(known)}")
        for path, const in ((config.old, a), (config.new, b)):
            if not any(p.id in ids for p in const.principles):
                raise JudgeError(f"--principles: none of {', '.join(ids)} is in {path}; name at least one "
                                 f"principle of each file")
    return a, b, ids


# --- the judge and its votes ----------------------------------------------------------------------


def expected_dtype(kind: str, num_gpus: float | None = None) -> str | None:
    """The dtype an engine of ``kind`` will load the model in (before loading it): a vote's cache key
    holds it, so cached votes are found without loading the model. openai: the server's own; ray: what
    ``rlaif engine serve`` resolves on a replica, bfloat16 with ``num_gpus`` and float32 without (Ray hides
    the GPUs from an actor that asks for none)."""
    if kind == "ray":
        from generator.engines.vllm_cpu import resolve_dtype

        return resolve_dtype("auto", cpu=not num_gpus)
    if kind == "vllm":
        from vllm.platforms import current_platform

        from generator.engines.vllm_cpu import DTYPE_ENV, resolve_dtype

        return resolve_dtype(os.environ.get(DTYPE_ENV) or "auto", cpu=current_platform.is_cpu())
    if kind == "transformers":
        import torch

        return "bfloat16" if torch.cuda.is_available() else "float32"
    return "server" if kind == "openai" else None


def model_sha256(model: str) -> str | None:
    """The content of a judge model named by a local path (plumbing/hashing.py, big files hashed once per
    stamp): a model folder's top-level files (what ``from_pretrained`` reads, as pipeline/fingerprints.py counts
    one), any other folder's files, a file's bytes. None for an embedded name or a Hub id."""
    from generator.models import EMBEDDED, display_name
    from plumbing.hashing import content_sha256, folder_sha256, is_model_folder

    path = Path(model).expanduser()
    if model in EMBEDDED or display_name(model) != model or not path.exists():
        return None
    try:
        return content_sha256(path) if path.is_file() else folder_sha256(path, recursive=not is_model_folder(path))
    except OSError as e:
        raise JudgeError(f"--model {model}: cannot be read ({e.strerror or e}); fix its permissions") from None


def judge_identity(jc: JudgeConfig, engine=None) -> dict:
    """What a vote depends on besides its prompt: model (and, for a local path, its content: weights trained
    again in place are another judge), engine kind, dtype, layout, top-k."""
    from generator.models import display_name
    from judge.build import engine_options

    if engine is not None:
        kind, model, dtype = engine.name, display_name(engine.model), getattr(engine, "dtype", None)
    else:
        kind = engine_options(jc).engine_name()
        model, dtype = display_name(jc.model), expected_dtype(kind, jc.num_gpus)
    sha = model_sha256(model)
    return {"model": model, **({"model_sha256": sha} if sha else {}), "engine": kind, "dtype": dtype,
            "layout": jc.resolved_layout, "top_k": jc.top_k}


@dataclass
class Side:
    """One constitution's tasks on the pairs: (pair, principle, order) with their prompts, and the draws."""

    name: str
    constitution: object
    tasks: list
    draws: list[list[str]]
    prompts: list[str]


def make_side(name: str, constitution, ids, pairs: list, jc: JudgeConfig, clock_ids: dict | None = None) -> Side:
    from judge.scoring import build_tasks, render_direct

    drawn = DrawnConstitution(constitution, ids, clock_ids)
    tasks, draws = build_tasks(drawn, pairs, jc)
    return Side(name, constitution, tasks, draws, render_direct(tasks, drawn.few_shot_compare(), jc))


def side_keys(side: Side, pairs: list, identity: dict) -> list[str]:
    from judge.ab_cache import vote_key

    return [vote_key(identity, pairs[t.pair].id, t.order, t.context["principle"], prompt)
            for t, prompt in zip(side.tasks, side.prompts, strict=True)]


def judge_missing(engine, sides: list[Side], keys: list[list[str]], pairs: list, cache, jc: JudgeConfig,
                  identity: dict, progress: Callable[[int, int], None]) -> tuple[dict, dict]:
    """Judge the votes the cache lacks, pair by pair in chunks of ``jc.batch_size`` pairs (both sides'
    prompts of a pair in one engine call, so the prefix cache shares the pair's text), committing each
    chunk; returns the count of votes judged and of prompts too long for this engine's context (never sent,
    never cached: judge/ab_cache.py), the prompt tokens sent, and the too-long votes for this run."""
    from judge.scoring import _score_prompts, vote_from_scores

    stored = cache.get(k for ks in keys for k in ks)
    missing: dict[str, tuple[Side, int]] = {}
    for side, ks in zip(sides, keys, strict=True):
        for i, k in enumerate(ks):
            if k not in stored and k not in missing:
                missing[k] = (side, i)
    by_pair: dict[int, list[str]] = {}
    for k, (side, i) in missing.items():
        by_pair.setdefault(side.tasks[i].pair, []).append(k)
    order = sorted(by_pair)
    done, tokens, too_long = 0, 0, {}
    progress(0, len(missing))
    for start in range(0, len(order), jc.batch_size):
        chunk = [k for p in order[start:start + jc.batch_size] for k in by_pair[p]]
        prompts = [missing[k][0].prompts[missing[k][1]] for k in chunk]
        scored = _score_prompts(engine, prompts, 1, jc.top_k)
        entries = []
        for k, prompt, s in zip(chunk, prompts, scored, strict=True):
            side, i = missing[k]
            t = side.tasks[i]
            if isinstance(s, str):  # the prompt does not fit this engine's context: never sent, never cached
                too_long[k] = {"p_a": None, "reason": s, "raw": {}}
                continue
            vote = vote_from_scores(t.principle_id, t.order, s, jc.top_k)
            entries.append({"key": k, "pair_id": pairs[t.pair].id, "order": t.order,
                            "principle_text": t.context["principle"], "principle_id": t.principle_id,
                            "judge": identity, "p_a": vote.p_a, "reason": vote.reason, "raw": vote.raw})
            tokens += engine.count_tokens(prompt)
        cache.put(entries)
        done += len(chunk)
        progress(done, len(missing))
        log.info("constitution ab: %d/%d fresh votes judged", done, len(missing))
    return {"fresh_votes": len(missing) - len(too_long), "too_long_votes": len(too_long),
            "fresh_prompt_tokens": tokens}, too_long


def side_verdicts(side: Side, keys: list[str], stored: dict, n_pairs: int) -> list:
    """The side's ``PairVerdict`` per pair, from the cached votes."""
    from judge.scoring import Vote, make_verdict

    votes: list[list] = [[] for _ in range(n_pairs)]
    for t, k in zip(side.tasks, keys, strict=True):
        v = stored[k]
        votes[t.pair].append(Vote(t.principle_id, t.order, v["p_a"], v["reason"], v["raw"]))
    return [make_verdict(votes[i], side.draws[i]) for i in range(n_pairs)]


# --- the run --------------------------------------------------------------------------------------


def _check_loaded(engine, identity: dict, sides: list[Side], pairs: list, keys: list[list[str]]) -> tuple:
    """Refuse an engine serving another model; key the votes by the dtype it really loaded, if not the expected."""
    from generator.engines.options import check_served

    check_served(engine, identity["model"])
    loaded = {**identity, "dtype": getattr(engine, "dtype", identity["dtype"])}
    if loaded == identity:
        return identity, keys
    log.warning("constitution ab: the engine loaded in %s, not %s", loaded["dtype"], identity["dtype"])
    return loaded, [side_keys(s, pairs, loaded) for s in sides]


def run_ab(config: ABConfig, progress: Callable[[int, int], None] | None = None, engine=None) -> dict:
    """Judge the pairs under both constitutions (cached votes reused), compute the statistics and write
    the outputs; returns metrics.json's content. ``engine`` overrides the one ``config.judge`` names
    (tests); ``progress(done, total)`` counts fresh votes."""
    from judge import ab_report, ab_stats
    from judge.ab_cache import CACHE, VoteCache, check_cache_dir, check_cache_place
    from judge.build import make_judge_engine
    from judge.scoring import templates_used
    from prompts import template_sha256

    started = time.perf_counter()
    ab_report.check_out(config.out, config.overwrite)
    if config.cache is not None:
        check_cache_place(config.cache, config.out)
    cache_dir = config.cache if config.cache is not None else config.out / CACHE
    check_cache_dir(cache_dir, "--cache" if config.cache is not None else f"--out {config.out}: its {CACHE}/ folder")
    a, b, ids = load_both(config)
    human, label = read_labelled_pairs(config.human, config.limit)
    jc = config.judge
    tsha = template_sha256(templates_used(jc), jc.templates)
    pairs = human.pairs
    renamed = renames(a, b)
    sides = [make_side("a", a, ids, pairs, jc), make_side("b", b, ids, pairs, jc, renamed)]
    identity = judge_identity(jc, engine)
    cache = VoteCache(cache_dir)
    cost = {"fresh_votes": 0, "too_long_votes": 0, "fresh_prompt_tokens": 0, "engine_load_seconds": 0.0,
            "judge_seconds": 0.0}
    too_long: dict = {}
    try:
        keys = [side_keys(s, pairs, identity) for s in sides]
        if len(cache.get(k for ks in keys for k in ks)) < len({k for ks in keys for k in ks}):
            own = engine is None
            t0 = time.perf_counter()
            if own:
                engine = make_judge_engine(jc)
            try:
                if own:
                    identity, keys = _check_loaded(engine, identity, sides, pairs, keys)
                cost["engine_load_seconds"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                fresh, too_long = judge_missing(engine, sides, keys, pairs, cache, jc, identity,
                                                progress or (lambda done, total: None))
                cost.update(fresh)
                cost["judge_seconds"] = time.perf_counter() - t0
            finally:
                if own:
                    engine.close()
        stored = {**cache.get(k for ks in keys for k in ks), **too_long}
        cost["cached_votes"] = len({k for ks in keys for k in ks}) - cost["fresh_votes"] - cost["too_long_votes"]
    finally:
        cache.close()
    verdicts = [side_verdicts(s, ks, stored, len(pairs)) for s, ks in zip(sides, keys, strict=True)]
    result = ab_stats.ab_metrics(pairs, *verdicts, ab_report.principle_status(a, b, ids, renamed), n_bins=config.n_bins,
                                 resamples=config.resamples, seed=jc.seed)
    cost.update(votes_a=len(keys[0]), votes_b=len(keys[1]), distinct_votes=len({k for ks in keys for k in ks}),
                total_seconds=time.perf_counter() - started)
    result["cost"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in cost.items()}
    result["settings"] = ab_report.settings(config, a, b, human, label, identity, tsha, cache_dir, renamed)
    ab_report.write_outputs(config.out, result, ab_stats.pair_rows(pairs, *verdicts))
    return result
