"""The judge stage: read responses, judge pairs against the constitution, write a preference run.

Inputs (the kind is detected before any model is loaded; a wrong kind is a ``JudgeError``):

* a ``generate`` run (prompt + N responses): ``pairing="all"`` emits every pair of distinct
  responses; ``"best-worst"`` judges every pair, ranks the responses with a Bradley-Terry fit
  (judge/pairing.py) and emits best vs worst (p_chosen = the fitted P(best beats worst));
* a ``revise`` run: the initial response vs the final revision;
* a file (jsonl/json/parquet/csv, optionally .gz) with ``prompt`` (text or messages),
  ``response_a`` and ``response_b``, and optionally ``id`` (default: a hash of the three). An id that
  repeats an earlier row's is numbered by its occurrence, like a repeated prompt in plumbing/inputs.py, so
  every row is judged as its own pair (tests/test_calibration_review.py).

Output rows follow ``judge.records.PREFERENCES``. In a row, a vote's ``order`` is relative to
the CHOSEN response: "ab" means chosen was shown as option (A). With ``pairing="all"`` p_chosen is
recomputable from the row alone: per principle the mean of p(chosen) over its votes' orders,
then the plain mean over the row's ``principle_ids`` (the principle draws, repeats counted;
tests/test_judge_build.py::test_generate_run_all_pairs_schema). With ``"best-worst"`` it is NOT:
p_chosen is the Bradley-Terry P(best beats worst) fitted to every pair of the item
(judge/pairing.py), while the row's votes are those of the direct best-vs-worst comparison only.
Unlabelled pairs (no scorable vote) go to errors.jsonl with the votes.
Rows with ``p_chosen < min_confidence`` go to the ``filtered`` split, schema unchanged; the
rule is recorded in the manifest under ``filter`` (one rule, so one reason for every row).

With ``calibrate="batch"`` the prior is estimated over the whole run (judge/calibration.py): the
verdicts are kept as read in the run's ``calibration/`` folder while pairs are judged, and the rows are
written once every pair is, all labelled with the one prior (judge/calibrated_run.py). The prior is
recorded in the manifest under ``calibration``, with ``applied: false`` and the reason when too few
votes were scored to estimate it (the labels are then the probabilities as read).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from judge.calibrated_run import CalibrationStore, open_store, verdict_record
from judge.calibration import Prior, calibration_spec
from judge.config import JudgeConfig
from judge.config import vllm_judge_kwargs as vllm_judge_kwargs  # what bench/ builds its judge engines with
from judge.errors import JudgeError
from judge.pairing import all_pairs, best_worst, bradley_terry, bt_probability
from judge.records import PREFERENCES
from judge.scoring import Pair, PairVerdict, judge_pairs, templates_used
from plumbing.batching import iter_batches
from plumbing.hashing import file_sha256
from plumbing.runs import MANIFEST, RunWriter, check_out_dir, item_id, read_manifest, shard_files

log = logging.getLogger(__name__)

STAGE = "judge"
FILTERED = "filtered"
FILE_COLUMNS = ("prompt", "response_a", "response_b")
RUN_COLUMNS = {"generate": ("prompt", "responses"), "revise": ("prompt", "init_response", "messages")}
INPUT_HELP = "give a generate run, a revise run, or a pair file with columns prompt, response_a, response_b"


@dataclass(frozen=True)
class Item:
    """One prompt with its candidate responses (distinct texts, in input order)."""

    id: str
    prompt: list[dict]
    responses: tuple[str, ...]


@dataclass
class JudgeInput:
    kind: str  # "generate" | "revise" | "file"
    path: str
    sha256: str  # the input run's spec hash, or the file's content hash
    items: list[Item]
    bad: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)


# --- input ----------------------------------------------------------------------------------------


def read_input(path: str | Path, limit: int | None = None, allow_empty: bool = False) -> JudgeInput:
    """Read and validate the input fully (cheap) so mistakes surface before a model loads. An input
    with nothing to judge (no rows, or only bad rows) is refused unless ``allow_empty``."""
    p = Path(path)
    if p.is_dir():
        if not (p / MANIFEST).is_file():
            raise JudgeError(f"--input {p} is a folder but not a run directory (no {MANIFEST}); {INPUT_HELP}")
        inp = _read_run(p, read_manifest(p), limit)
    elif not p.exists():
        raise JudgeError(f"--input {p}: no such file or folder; {INPUT_HELP}")
    else:
        inp = _read_file(p, limit)
    if not inp.items and not allow_empty:
        how = "pass --allow-empty to accept an empty run"
        if inp.bad:
            raise JudgeError(f"--input {p}: none of its {len(inp.bad)} rows can be judged (first: {inp.bad[0][1]}); "
                             f"fix the input, or {how}")
        if inp.kind == "file":
            raise JudgeError(f"--input {p} has no rows; {INPUT_HELP}, or {how}")
        raise JudgeError(f"--input {p}: the {inp.kind} run has no rows; run `rlaif {inp.kind}` to completion "
                         f"first, or {how}")
    return inp


def _distinct(texts: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(texts))  # identical responses never make a pair


def _read_run(path: Path, manifest: dict, limit: int | None) -> JudgeInput:
    from plumbing.runs import load

    stage = manifest.get("stage")
    if stage not in RUN_COLUMNS:
        raise JudgeError(f"--input {path} is a {stage!r} run; {INPUT_HELP}")
    if manifest.get("status") != "complete":
        log.warning("input run %s is %s; judging the rows it has so far", path, manifest.get("status"))
    ds = load(path)
    missing = [c for c in RUN_COLUMNS[stage] if c not in ds.column_names]
    if missing:
        raise JudgeError(f"--input {path}: {stage} run lacks column(s) {', '.join(missing)}; was it made by an "
                         f"older rlaif? re-run `rlaif {stage}`")
    items = []
    for row in ds.select(range(min(limit or len(ds), len(ds)))):
        if stage == "generate":
            responses = _distinct(row["responses"])
        else:  # the initial response vs the final revision (the last assistant turn of messages)
            final = next((m["content"] for m in reversed(row["messages"]) if m["role"] == "assistant"), "")
            responses = _distinct([row["init_response"], final])
        items.append(Item(row["id"], list(row["prompt"]), responses))
    return JudgeInput(stage, str(path), manifest.get("spec_sha256", ""), items)


def _read_file(path: Path, limit: int | None) -> JudgeInput:
    from plumbing.inputs import BadItem, InputError, read_rows, to_messages

    items: list[Item] = []
    bad: list[tuple[str, str]] = []
    seen: Counter[str] = Counter()
    try:
        for index, row in enumerate(read_rows(path)):
            if limit is not None and index >= limit:
                break
            if isinstance(row, BadItem):
                bad.append((row.id, row.reason))
                continue
            if index == 0 and (missing := [c for c in FILE_COLUMNS if c not in row]):
                raise JudgeError(f"--input {path}: missing column(s) {', '.join(missing)} (has "
                                 f"{', '.join(map(str, row)) or 'none'}); {INPUT_HELP}")
            values = [row.get(c) for c in FILE_COLUMNS]
            rid = str(row.get("id") or item_id(*values))
            seen[rid] += 1
            if seen[rid] > 1:  # a repeated id, or a repeated row without one: numbered, so judged as its own pair
                rid = item_id(rid, seen[rid])
            if any(v is None for v in values) or not all(isinstance(v, str) for v in values[1:]):
                bad.append((rid, f"row {index}: prompt, response_a and response_b must all be given, "
                                 f"responses as text"))
                continue
            try:
                prompt = to_messages(values[0])
            except TypeError as e:
                bad.append((rid, f"row {index}: {e}"))
                continue
            items.append(Item(rid, prompt, _distinct(values[1:])))
    except InputError as e:
        raise JudgeError(str(e)) from None
    return JudgeInput("file", str(path), file_sha256(path), items, bad)


# --- spec and rows --------------------------------------------------------------------------------


def judge_spec(config: JudgeConfig, inp: JudgeInput, constitution_sha256: str, template_sha256: str,
               engine=None) -> dict:
    """What defines the labels (hashed into the run): the engine kind and model served among them;
    runtime knobs (servers, batch size) are left out."""
    from generator.engines.options import provenance

    return {"input": {"kind": inp.kind, "sha256": inp.sha256}, **provenance(engine_options(config), engine),
            "constitution_sha256": constitution_sha256, "template_sha256": template_sha256,
            "principles_per_pair": config.principles_per_pair, "orders": config.orders, "cot": config.cot_spec(),
            "pairing": config.pairing, "min_confidence": config.min_confidence, "seed": config.seed,
            "top_k": config.top_k, "layout": config.resolved_layout, "calibrate": config.calibrate,
            **calibration_spec(config.calibrate)}


def _plan(item: Item, pairing: str, done: set[str]) -> list[tuple[str, int, int]]:
    """(row id, i, j) of the pairs still to judge for this item; best-worst needs all pairs."""
    if len(item.responses) < 2:
        return []
    if pairing == "best-worst":
        return [] if item.id in done else [(item.id, i, j) for i, j in all_pairs(len(item.responses))]
    return [(rid, i, j) for i, j in all_pairs(len(item.responses))
            if (rid := item_id(item.id, i, j)) not in done]


def make_row(row_id: str, item: Item, chosen: int, rejected: int, p_chosen: float, verdict: PairVerdict,
             chosen_is_first: bool, meta: dict) -> dict:
    votes = verdict.votes if chosen_is_first else tuple(v.swapped() for v in verdict.votes)
    return {"id": row_id, "prompt": item.prompt,
            "chosen": [{"role": "assistant", "content": item.responses[chosen]}],
            "rejected": [{"role": "assistant", "content": item.responses[rejected]}],
            "p_chosen": p_chosen, "votes": [v.to_record() for v in votes],
            "principle_ids": list(verdict.principle_ids), "position_consistent": verdict.position_consistent,
            **meta}


def _unlabelled(row_id: str, reason: str, verdict: PairVerdict | None) -> dict:
    extra = {"votes": [v.to_record() for v in verdict.votes]} if verdict else {}
    return {"id": row_id, "reason": reason, "kind": "unlabelled", **extra}


def rows_for_item(item: Item, plan: list[tuple[str, int, int]], verdicts: list[PairVerdict], pairing: str,
                  meta: dict) -> tuple[list[dict], list[dict]]:
    """(preference rows, unlabelled records) of one item from its pairs' verdicts."""
    if pairing == "best-worst":
        return _best_worst_rows(item, plan, verdicts, meta)
    rows, errors = [], []
    for (rid, i, j), v in zip(plan, verdicts, strict=True):
        if v.p_first is None:
            errors.append(_unlabelled(rid, v.reason or "unlabelled", v))
        elif v.p_first >= 0.5:
            rows.append(make_row(rid, item, i, j, v.p_first, v, True, meta))
        else:
            rows.append(make_row(rid, item, j, i, 1.0 - v.p_first, v, False, meta))
    return rows, errors


def _best_worst_rows(item: Item, plan, verdicts, meta) -> tuple[list[dict], list[dict]]:
    outcomes = [(i, j, v.p_first) for (_, i, j), v in zip(plan, verdicts, strict=True) if v.p_first is not None]
    scores = bradley_terry(len(item.responses), outcomes)
    picked = best_worst(scores)
    if picked is None:
        return [], [_unlabelled(item.id, "best-worst: fewer than two responses have a scored comparison", None)]
    best, worst = picked
    k = next(n for n, (_, i, j) in enumerate(plan) if {i, j} == {best, worst})
    direct = verdicts[k]
    p = bt_probability(scores[best], scores[worst])
    row = make_row(item.id, item, best, worst, p, direct, plan[k][1] == best, meta)
    return [row], []


# --- the stage ------------------------------------------------------------------------------------


@dataclass
class JudgeSummary:
    out: str
    counts: dict
    unlabelled: int
    bad_input: int
    judged_pairs: int
    consistency: tuple[int, int]  # (position-consistent rows, rows with both orders scored)
    calibration: Prior | None = None  # the run's prior with --calibrate batch

    def line(self) -> str:
        ok, n = self.consistency
        rate = f"{100.0 * ok / n:.1f}% of {n} rows" if n else "n/a"
        cal = self.calibration
        prior = "" if cal is None else f"; {cal.reason or f'calibrated: P(A) {cal.p_a:.3f} over {cal.votes} votes'}"
        return (f"judge: {self.counts.get('train', 0)} train, {self.counts.get(FILTERED, 0)} filtered, "
                f"{self.unlabelled} unlabelled, {self.bad_input} bad input rows; position-consistent {rate}{prior} "
                f"-> {self.out}")


def load_constitution(path: str | None):
    from constitution import load_constitution as _load
    from constitution import path_or_default

    return _load(path_or_default(path))


def _runtime(config: JudgeConfig) -> dict:
    """Recorded, not hashed: how it was run, and which constitution FILE (its sha is in the spec;
    ``rlaif publish`` finds the file here)."""
    from constitution import path_or_default

    return {**config.runtime(), "constitution": str(Path(path_or_default(config.constitution)).resolve())}


def engine_options(config: JudgeConfig):
    """How the judge's engine is built: the judge's engine settings included (judge/config.py)."""
    return config.engine_options()


def make_judge_engine(config: JudgeConfig):
    """The engine named by ``config``, built like every other stage's (generator/engines/options.py) with the
    judge's engine settings (an in-process vLLM on a CPU gets ``CPU_PREFIX_BLOCK``-token KV blocks:
    judge/prefix.py)."""
    return config.engine_options().build(seed=config.seed)


def _consistency(out: str) -> tuple[int, int]:
    import pyarrow.parquet as pq

    vals = [v for f in shard_files(out) for v in pq.read_table(f, columns=["position_consistent"])
            .column("position_consistent").to_pylist() if v is not None]
    return sum(vals), len(vals)


def run_judge(config: JudgeConfig, *, engine=None, constitution=None,
              progress: Callable[[int, int], None] | None = None) -> JudgeSummary:
    """Run the stage. ``engine``/``constitution`` may be injected (tests, notebooks); otherwise
    they are built from ``config`` AFTER the input and the output run were validated.
    ``progress(done_pairs, total_pairs)`` is called after each batch."""
    from prompts import template_sha256

    if not config.input or not config.out:
        raise JudgeError("rlaif judge needs --input and --out")
    inp = read_input(config.input, config.limit, config.allow_empty)
    const = constitution if constitution is not None else load_constitution(config.constitution)
    tsha = template_sha256(templates_used(config), config.templates)
    spec = judge_spec(config, inp, const.sha256(), tsha, engine)
    mode = check_out_dir(config.out, STAGE, overwrite=config.overwrite)
    store = None if config.calibrate != "batch" else open_store(  # refuses more pairs once the prior is fixed
        config.out, spec, mode, _keys((item, _plan(item, config.pairing, set())) for item in inp.items), JudgeError,
        "judge them into another --out, or pass --overwrite to judge the whole input again")
    writer = RunWriter(config.out, STAGE, spec, PREFERENCES, runtime=_runtime(config), overwrite=config.overwrite)
    if store is not None:
        store.clear(keep_own=mode != "replace")
    for bid, reason in inp.bad:
        if bid not in writer.done_ids:
            writer.error(bid, reason, kind="bad_input")
    for item in inp.items:
        if len(item.responses) < 2 and item.id not in writer.done_ids:
            writer.error(item.id, "fewer than two distinct responses to compare", kind="bad_input")
    todo = [(item, plan) for item in inp.items if (plan := _plan(item, config.pairing, writer.done_ids))]
    pending = todo if store is None else _unjudged(todo, store.records())
    total = sum(len(plan) for _, plan in pending)
    meta = {"judge_model": spec["model"], "constitution_sha256": const.sha256(),
            "template_sha256": tsha}
    own = engine is None and bool(pending)
    if own:
        engine = make_judge_engine(config)
    done = 0
    try:
        if engine is not None and pending:
            from generator.engines.options import check_served

            writer.runtime["served"] = check_served(engine, spec["model"])
        if progress:
            progress(0, total)
        for batch in iter_batches(pending, config.batch_size, weight=lambda entry: len(entry[1])):
            done += _judge_batch(engine, const, config, batch, writer, meta, store)
            if progress:
                progress(done, total)
    finally:
        if own:
            engine.close()
    prior = _label_calibrated(store, config, todo, writer, meta) if store is not None else None
    return _finish(writer, config, done, prior)


def _keys(entries) -> list[str]:
    """The pair ids (``Pair.id``, the calibration store's keys) of (item, plan) entries, in order."""
    return [item_id(item.id, i, j) for item, plan in entries for _, i, j in plan]


def _unjudged(todo: list, cached: dict) -> list:
    """``todo`` without the pairs whose verdicts the calibration store holds."""
    left = [(item, [p for p in plan if item_id(item.id, p[1], p[2]) not in cached]) for item, plan in todo]
    return [(item, plan) for item, plan in left if plan]


def _judge_batch(engine, const, config: JudgeConfig, batch, writer: RunWriter, meta: dict,
                 store: CalibrationStore | None) -> int:
    """Judge a batch: its rows are written now, or (calibrating) its raw verdicts are stored."""
    pairs = [Pair(item_id(item.id, i, j), item.prompt, item.responses[i], item.responses[j])
             for item, plan in batch for _, i, j in plan]
    verdicts = judge_pairs(engine, const, pairs, config)
    if store is None:
        _write_labels(writer, config, batch, verdicts, meta)
    else:
        store.add([verdict_record(p.id, v) for p, v in zip(pairs, verdicts, strict=True)])
    return len(pairs)


def _write_labels(writer: RunWriter, config: JudgeConfig, batch, verdicts: list[PairVerdict], meta: dict) -> None:
    train, filtered, k = [], [], 0
    for item, plan in batch:
        rows, errors = rows_for_item(item, plan, verdicts[k:k + len(plan)], config.pairing, meta)
        k += len(plan)
        for r in rows:
            (filtered if r["p_chosen"] < config.min_confidence else train).append(r)
        for e in errors:
            writer.error(e.pop("id"), e.pop("reason"), **e)
    writer.write(train)
    writer.write(filtered, split=FILTERED)


def _label_calibrated(store: CalibrationStore, config: JudgeConfig, todo: list, writer: RunWriter,
                      meta: dict) -> Prior:
    """Every pair is judged: label the rows still to write (all, unless a run killed while writing them
    left some) with the run's prior, batch by batch."""
    verdicts, prior = store.calibrated(_keys(todo))
    if not prior.applied:
        log.warning("judge: %s", prior.reason)
    k = 0
    for batch in iter_batches(todo, config.batch_size, weight=lambda entry: len(entry[1])):
        n = sum(len(plan) for _, plan in batch)
        _write_labels(writer, config, batch, verdicts[k:k + n], meta)
        k += n
    return prior


def _finish(writer: RunWriter, config: JudgeConfig, judged: int, prior: Prior | None) -> JudgeSummary:
    from plumbing.runs import read_errors

    errors = read_errors(writer.dir)
    unlabelled = sum(1 for e in errors if e.get("kind") == "unlabelled")
    consistency = _consistency(str(writer.dir))
    extra = {"filter": {"split": FILTERED, "reason": f"p_chosen < min_confidence ({config.min_confidence})",
                        "min_confidence": config.min_confidence},
             "summary": {"unlabelled": unlabelled, "bad_input": len(errors) - unlabelled,
                         "position_consistent": consistency[0], "position_checked": consistency[1]},
             **({"calibration": prior.to_dict()} if prior is not None else {})}
    counts = writer.finish(extra)
    return JudgeSummary(str(writer.dir), counts, unlabelled, len(errors) - unlabelled, judged, consistency, prior)
