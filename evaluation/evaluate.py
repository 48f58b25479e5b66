"""``rlaif eval``: a policy's win-rate against a reference under the constitution judge.

For each prompt the policy and the reference each generate ONE response (greedy by default, or seeded
sampling: ``base.request_seed`` makes the sample a function of the seed and the prompt); the judge
compares policy vs reference with the pairwise logprob judge of judge/scoring.py, in BOTH option orders
over K principles drawn by weight, so ``p_policy`` = the soft probability that the policy's response is
better. Which response is the pair's first (option (A) in order "ab") is a fair coin per prompt, fixed
by the eval seed and the prompt id (``policy_first``, recorded in each row as ``policy_first``), so neither
model sits in (A) throughout: a prior estimated per order would then hold that model's real advantage and
cancel it (judge/calibration.py pools the orders for the same reason; the per-order means it records stay
meaningful).
With ``judge.calibrate="batch"`` the prior is estimated over every judged prompt of the run, so the rows
are written once all are judged (judge/calibrated_run.py); the prior is recorded in the manifest and
metrics.json (``calibration``) and the row's votes keep the probability read as ``p_a_raw``. evaluation/winrate.py turns the
verdicts into the win-rate (bootstrap interval over prompts), per-principle win-rates, the correlation
with the length difference (characters), the length-controlled win-rate (AlpacaEval-LC, arXiv
2404.04475) and, when the prompts carry an ``answer`` column, the answer accuracy of both models with the
gsm8k or math reward (align/rewards/).

The output is a run directory of stage ``eval`` (plumbing/runs.py): one row per judged prompt in
``data/`` (both responses, token counts, the verdict with its votes), the responses of each model cached
batch by batch in ``responses/<role>-NNNNN.jsonl`` (each file written atomically), so a killed eval
resumes where it stopped and regenerates nothing it has; then metrics.json, report.md and the plots
(evaluation/report.py), each written atomically, and the manifest marked complete. A changed spec is
refused unless ``overwrite``, which replaces only an earlier eval run (tests/test_eval.py).

Engines: ``evaluate(config, engine=...)`` uses a caller's engine for every role (policy, reference,
judge) whose model it serves, and ``engines={"judge": e, ...}`` names one per role; the others are built
through the one engine pool (generator/engines/pool.py), one per distinct (engine, model, servers), the judge's
with the judge's engine settings (judge/config.py), and each is closed as soon as no later phase needs it; the
model served like the judge generates last, so one engine is alive at a time wherever the models allow
(tests/test_eval.py::test_eval_holds_one_engine_at_a_time_where_the_models_allow).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from evaluation.inputs import (
    RESPONSES,
    EvalError,
    EvalInput,
    EvalItem,
    read_cache,
    read_input,
    write_cache,
)
from generator.engines.base import Engine, Sampling
from generator.engines.options import EngineOptions
from judge.calibration import Prior, calibration_spec
from judge.config import JudgeConfig
from plumbing.hashing import hash_fraction
from plumbing.ranges import Seed

log = logging.getLogger(__name__)

STAGE = "eval"
ROLES = ("policy", "reference", "judge")
GENERATING = ("policy", "reference")
# JudgeConfig fields that are not how pairs are judged: files and runtime knobs (their content is hashed
# elsewhere in the spec: the constitution's and the templates' sha256, the judge's provenance).
JUDGE_NOT_SPEC = {"input", "out", "constitution", "templates", "model", "engine", "base_urls", "batch_size", "limit",
                  "overwrite", "allow_empty", "pairing", "min_confidence"}


class EvalConfig(BaseModel):
    """One evaluation of a policy against a reference: what defines the result and how it is run."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # no inf/nan temperature
    prompts: Path = Field(description="Prompt file (jsonl/json/parquet/csv, .gz ok; an optional 'answer' column) "
                                      "or a run directory with 'prompt' (and 'answer') columns, e.g. rlaif data gsm8k.")
    out: Path = Field(description="Eval run directory: new, empty, or an earlier eval run (resumed; replaced only "
                                  "with overwrite).")
    policy: EngineOptions = Field(description="The model under evaluation (a trained folder, a name, a Hub id).")
    reference: EngineOptions = Field(description="The model the policy is compared against.")
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="The judge (model, constitution, "
                                                                        "principles per pair, seed, ...).")
    max_tokens: int = Field(256, ge=1, description="Most tokens generated per response.")
    temperature: float = Field(0.0, ge=0.0, description="Sampling temperature of both models (0 = greedy).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling threshold of both models.")
    seed: Seed = Field(0, description="Sampling seed of both models and seed of the bootstrap.")
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N rows of the prompts.")
    prompt_column: str | None = Field(None, description="Column holding the prompt (default: auto-detect).")
    reward: Literal["auto", "gsm8k", "math", "none"] = Field(
        "auto", description="Answer checker for prompts with an 'answer' column: auto (gsm8k when every answer "
                            "holds '####', else math), gsm8k, math, or none.")
    resamples: int = Field(1000, ge=100, description="Bootstrap resamples of the win-rate intervals.")
    overwrite: bool = Field(False, description="Replace an earlier eval run in `out` (never anything else).")

    @model_validator(mode="after")
    def _checked(self) -> EvalConfig:
        if self.judge.orders != "both":
            raise ValueError("rlaif eval judges both option orders (position bias cancels); set judge.orders to 'both'")
        options = self.options()
        for role, flag in (("policy", "--policy"), ("reference", "--reference"), ("judge", "--judge-model")):
            if options[role].engine_name() in ("vllm", "transformers"):  # they load an existing folder as is
                _check_model_folder(options[role].model, flag)
        return self

    def sampling(self) -> Sampling:
        return Sampling(n=1, temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                        seed=self.seed)

    def options(self) -> dict[str, EngineOptions]:
        return {"policy": self.policy, "reference": self.reference, "judge": self.judge.engine_options()}


def _check_model_folder(model: str, flag: str) -> None:
    """A folder named as a model must hold one (config.json): a run directory or a typo fails here, not in vLLM."""
    path = Path(model).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise ValueError(f"{flag} {model} is a folder without config.json, not a model; give the --out folder "
                         f"of `rlaif align ...`, another model folder, an embedded name or a Hub id")


# --- engines --------------------------------------------------------------------------------------


class RoleEngines:
    """The engines of the roles: a caller's (``given``, used, never closed) or built through the one engine pool
    (generator/engines/pool.py), one per distinct (engine kind, model, servers), planned with every role's
    settings so an engine the judge shares carries the judge's. ``release(later_roles)`` closes the built
    engines no later role needs."""

    def __init__(self, options: dict[str, EngineOptions], given: dict[str, Engine], seed: int, pool=None):
        from generator.engines.pool import EnginePool

        self.options, self.given, self.seed = options, given, seed
        self.pool = (pool or EnginePool()).plan(o for role, o in options.items() if role not in given)

    def phase_order(self) -> tuple[str, ...]:
        """The generating roles, the one served like the judge last, then the judge: each engine is closed
        before the next is built wherever the models allow (two vLLM engines may not fit one GPU)."""
        from generator.engines.pool import pool_key

        judge = pool_key(self.options["judge"])
        return (*sorted(GENERATING, key=lambda role: pool_key(self.options[role]) == judge), "judge")

    def get(self, role: str) -> Engine:
        if role in self.given:
            return self.given[role]
        return self.pool.get(self.options[role], seed=self.seed)

    def release(self, later_roles: tuple[str, ...] = ()) -> None:
        self.pool.release(self.options[r] for r in later_roles if r not in self.given)


def given_engines(options: dict[str, EngineOptions], engine: Engine | None,
                  engines: dict[str, Engine] | None) -> dict[str, Engine]:
    """Which caller engine serves which role: ``engines[role]``, else ``engine`` where it serves the role's model."""
    from generator.models import display_name

    unknown = set(engines or {}) - set(ROLES)
    if unknown:
        raise EvalError(f"engines for unknown role(s) {', '.join(sorted(unknown))}; roles: {', '.join(ROLES)}")
    out = dict(engines or {})
    if engine is not None:
        for role in ROLES:
            if role not in out and display_name(engine.model) == display_name(options[role].model):
                out[role] = engine
    return out


# --- the stage ------------------------------------------------------------------------------------


def eval_spec(config: EvalConfig, inp: EvalInput, constitution_sha256: str, template_sha256: str,
              given: dict[str, Engine]) -> dict:
    """What defines the rows (hashed into the run); runtime knobs (batch sizes, servers, limit) are left out."""
    from generator.engines.options import provenance

    options = config.options()
    judging = config.judge.model_dump(mode="json", exclude=JUDGE_NOT_SPEC)
    return {"input": {"sha256": inp.sha256, "prompt_column": config.prompt_column},
            **{role: provenance(options[role], given.get(role)) for role in ROLES},
            "sampling": config.sampling().to_dict(), "constitution_sha256": constitution_sha256,
            "template_sha256": template_sha256, "judging": {**judging, **calibration_spec(config.judge.calibrate)},
            "policy_first": "hash_fraction(prompt id + ':policy-first', seed) < 0.5"}


def policy_first(seed: int, prompt_id: str) -> bool:
    """Whether the policy's response is the pair's first (option (A) in order "ab") on this prompt: a fair
    coin fixed by the eval seed and the prompt id alone, so neither the batch size nor a resume moves it."""
    return hash_fraction(f"{prompt_id}:policy-first", seed) < 0.5


def evaluate(config: EvalConfig, engine: Engine | None = None, *, engines: dict[str, Engine] | None = None,
             constitution=None, progress: Callable[[int, int], None] | None = None, pool=None) -> dict:
    """Run the evaluation into ``config.out``; returns metrics.json's content. Input, output folder,
    constitution and templates are checked before any engine is built. ``progress(done, total)`` counts
    prompt-steps: each pending prompt is generated by both models and judged (3 steps). ``pool``: a caller's
    engine pool (generator/engines/pool.py) whose engines the roles may use; the eval closes every engine of it
    once no later phase needs it."""
    from constitution import load_constitution, path_or_default
    from evaluation.report import clear_outputs, write_outputs
    from judge.scoring import templates_used
    from plumbing.runs import RunWriter, check_out_dir
    from prompts import template_sha256

    mode = check_out_dir(config.out, STAGE, overwrite=config.overwrite)
    inp = read_input(config)
    j = config.judge
    const = constitution if constitution is not None else load_constitution(path_or_default(j.constitution))
    tsha = template_sha256(templates_used(j), j.templates)
    options = config.options()
    given = given_engines(options, engine, engines)
    spec = eval_spec(config, inp, const.sha256(), tsha, given)
    runtime = {"limit": config.limit, "batch_sizes": {r: o.batch_size for r, o in options.items()},
               "base_urls": {r: o.base_urls for r, o in options.items()},
               "constitution": str(Path(path_or_default(j.constitution)).resolve())}
    store = _calibration_store(config, inp, spec, mode)
    writer = RunWriter(config.out, STAGE, spec, eval_rows(), runtime=runtime, overwrite=config.overwrite)
    try:
        if mode == "replace":
            shutil.rmtree(writer.dir / RESPONSES, ignore_errors=True)
            clear_outputs(writer.dir)
        if store is not None:
            store.clear(keep_own=mode != "replace")
        for bid, reason in inp.bad:
            writer.error(bid, reason, kind="bad_input")
        roles = RoleEngines(options, given, config.seed, pool)
        try:
            prior = _run_phases(config, inp, writer, roles, const, progress or (lambda done, total: None), store)
        finally:
            roles.release()
        result, points = compute_result(config, inp, writer, spec, prior)
        write_outputs(writer.dir, result, points)
        writer.finish({"summary": {k: result["win_rate"][k] for k in ("value", "lo", "hi", "n")},
                       **({"calibration": result["calibration"]} if prior is not None else {})})
    finally:
        writer.close()
    return result


def _calibration_store(config: EvalConfig, inp: EvalInput, spec: dict, mode: str):
    """The run's calibration store with ``judge.calibrate="batch"`` (else None): judge/calibrated_run.py. Once
    its prior is fixed the run is refused prompts its prior does not cover, judged or not (those that failed are
    not pending)."""
    from judge.calibrated_run import open_store
    from plumbing.runs import read_errors

    if config.judge.calibrate != "batch":
        return None
    failed = {e.get("id") for e in read_errors(config.out)} if mode == "resume" else set()
    return open_store(config.out, spec, mode, [it.id for it in inp.items if it.id not in failed], EvalError,
                      "evaluate them into another --out, or pass --overwrite to judge every prompt again")


def _run_phases(config: EvalConfig, inp: EvalInput, writer, pool: RoleEngines, const, report,
                store=None) -> Prior | None:
    todo = [it for it in inp.items if it.id not in writer.done_ids]
    total, done = 3 * len(todo), 0
    report(done, total)
    cache = {role: read_cache(writer.dir, role) for role in GENERATING}
    order = pool.phase_order()
    for n, role in enumerate(order[:-1]):
        need = [it for it in todo if it.id not in cache[role]]
        done += len(todo) - len(need)
        if need:
            done = _generate(config, role, need, pool.get(role), writer, cache[role], report, done, total)
        pool.release(order[n + 1:])
    done, prior = _judge(config, todo, cache, pool, const, writer, report, done, total, store)
    report(total, total)
    return prior


def _generate(config: EvalConfig, role: str, items: list[EvalItem], engine: Engine, writer, cache: dict,
              report, done: int, total: int) -> int:
    """Generate ``role``'s response to each item, batch by batch, into ``responses/<role>-NNNNN.jsonl``."""
    from generator.engines.options import check_served
    from plumbing.batching import iter_batches

    writer.runtime.setdefault("served", {})[role] = check_served(engine, writer.spec[role]["model"])
    sampling = config.sampling()
    for batch in iter_batches(items, getattr(config, role).batch_size):
        records, fits = [], []
        for it in batch:
            n = engine.count_tokens(it.messages)
            if n + sampling.max_tokens > engine.max_context:
                records.append({"id": it.id, "error": f"prompt is {n} tokens; with --max-tokens "
                                                      f"{sampling.max_tokens} it exceeds the {role} model's context "
                                                      f"of {engine.max_context}"})
            else:
                fits.append(it)
        outputs = engine.generate([it.messages for it in fits], sampling) if fits else []
        records += [{"id": it.id, "text": c[0].text, "num_tokens": c[0].num_tokens, "finish_reason": c[0].finish_reason}
                    for it, c in zip(fits, outputs, strict=True)]
        write_cache(writer.dir, role, records)
        cache.update((r["id"], r) for r in records)
        done += len(batch)
        report(done, total)
    return done


def _judge(config: EvalConfig, items: list[EvalItem], cache: dict, pool: RoleEngines, const, writer, report,
           done: int, total: int, store=None) -> tuple[int, Prior | None]:
    """Judge policy vs reference (the pair's first response by ``policy_first``), batch by batch, into the
    run's rows; calibrating, into ``store`` and then the rows, all labelled with the run's prior."""
    from generator.engines.options import check_served
    from judge.calibrated_run import verdict_record
    from judge.scoring import Pair, judge_pairs
    from plumbing.batching import iter_batches

    ready = []
    for it in items:
        failed = [f"{role}: {cache[role][it.id]['error']}" for role in GENERATING if "error" in cache[role][it.id]]
        if failed:
            writer.error(it.id, "; ".join(failed), kind="too_long")
            done += 1
        else:
            ready.append(it)
    judged = {} if store is None else store.records()
    pending = [it for it in ready if it.id not in judged]
    done += len(ready) - len(pending)
    report(done, total)
    if pending:
        engine = pool.get("judge")
        writer.runtime.setdefault("served", {})["judge"] = check_served(engine, writer.spec["judge"]["model"])
    for batch in iter_batches(pending, config.judge.batch_size):
        shown = [(cache["policy"][it.id]["text"], cache["reference"][it.id]["text"]) for it in batch]
        pairs = [Pair(it.id, it.messages, *(pr if policy_first(config.seed, it.id) else pr[::-1]))
                 for it, pr in zip(batch, shown, strict=True)]
        verdicts = judge_pairs(engine, const, pairs, config.judge)
        if store is None:
            writer.write([eval_row(it, cache, v, policy_first(config.seed, it.id)) for it, v in zip(batch, verdicts,
                                                                                                   strict=True)])
        else:
            store.add([verdict_record(it.id, v) for it, v in zip(batch, verdicts, strict=True)])
        done += len(batch)
        report(done, total)
    if store is None:
        return done, None
    verdicts, prior = store.calibrated([it.id for it in ready])
    for batch in iter_batches(list(zip(ready, verdicts, strict=True)), config.judge.batch_size):
        writer.write([eval_row(it, cache, v, policy_first(config.seed, it.id)) for it, v in batch])
    if not prior.applied:
        log.warning("eval: %s", prior.reason)
    return done, prior


def eval_row(item: EvalItem, cache: dict, verdict, first: bool = True) -> dict:
    """One judged prompt; ``first``: the policy was the pair's first response. The row is seen from the policy's
    side whichever it was: ``p_policy`` = P(policy better), and a vote's order "ab" means the POLICY's
    response was shown as option (A)."""
    pol, ref = cache["policy"][item.id], cache["reference"][item.id]
    p = verdict.p_first if first or verdict.p_first is None else 1.0 - verdict.p_first
    votes = verdict.votes if first else [v.swapped() for v in verdict.votes]
    return {"id": item.id, "prompt": item.messages, "policy": pol["text"], "reference": ref["text"],
            "policy_tokens": pol["num_tokens"], "reference_tokens": ref["num_tokens"],
            "policy_finish": pol["finish_reason"], "reference_finish": ref["finish_reason"], "answer": item.answer,
            "p_policy": p, "votes": [v.to_record() for v in votes], "policy_first": first,
            "principle_ids": list(verdict.principle_ids), "position_consistent": verdict.position_consistent,
            "reason": verdict.reason}


def eval_rows():
    """The schema of an eval run's rows (built on call: importing datasets is slow, the CLI imports this module)."""
    from datasets import Features, List, Value

    from generator.records import MESSAGES
    from judge.records import VOTE

    return Features({"id": Value("string"), "prompt": MESSAGES, "policy": Value("string"),
                     "reference": Value("string"), "policy_tokens": Value("int64"),
                     "reference_tokens": Value("int64"), "policy_finish": Value("string"),
                     "reference_finish": Value("string"), "answer": Value("string"), "p_policy": Value("float64"),
                     "votes": List(VOTE), "policy_first": Value("bool"), "principle_ids": List(Value("string")),
                     "position_consistent": Value("bool"), "reason": Value("string")})


# --- metrics --------------------------------------------------------------------------------------


def compute_result(config: EvalConfig, inp: EvalInput, writer, spec: dict,
                   prior: Prior | None = None) -> tuple[dict, list[tuple[int, float]]]:
    """metrics.json's content over the rows of this input's prompts (a resumed run may hold more), and the
    (length difference, verdict) point of each scored prompt for the plot; ``calibration`` is the run's prior
    (None uncalibrated)."""
    from evaluation.metrics import compute_metrics
    from evaluation.report import settings
    from plumbing.runs import load, read_errors

    ids = {it.id for it in inp.items}
    rows = [r for r in load(writer.dir) if r["id"] in ids]
    errors = [e for e in read_errors(writer.dir) if e.get("id") in ids | {b for b, _ in inp.bad}]
    result = {**compute_metrics(rows, reward=config.reward, resamples=config.resamples, seed=config.seed),
              "errors": len(errors), "calibration": None if prior is None else prior.to_dict(),
              "settings": settings(config, inp, spec)}
    points = [(len(r["policy"]) - len(r["reference"]), r["p_policy"]) for r in rows if r["p_policy"] is not None]
    return result, points


__all__ = ["STAGE", "EvalConfig", "EvalError", "EvalInput", "EvalItem", "eval_rows", "evaluate", "read_input"]
