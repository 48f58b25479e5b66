"""The whole-run prior of ``--calibrate batch`` (judge/calibration.py) in a stage that writes batch by batch.

A calibrated label depends on the prior, and the prior on every vote of the run, so a stage that
calibrates labels nothing while it judges. It keeps each batch's verdicts AS READ in
``<run>/calibration/verdicts-<spec>-NNNNN.jsonl`` (one file per batch, written atomically; ``<spec>`` the
first 16 hex digits of the run's spec hash, so verdicts of another spec are never read), and writes its
rows only when every pair is judged: the prior is estimated once over all of the run's verdicts, written
to ``prior-<spec>.json`` BEFORE any row, with the keys of the pairs it was estimated over, and every row is
labelled with it.

Hence a label depends neither on the batch size nor on where a resumed run restarted: a resumed run
reads the verdicts it has, judges only the others and estimates the prior an uninterrupted run estimates
(tests/test_calibration_runs.py::test_calibrated_labels_do_not_depend_on_batch_size_or_resume); a run killed
while writing its rows finds the prior and labels the rest with it. JSON keeps a float exactly, so
verdicts read back are the verdicts judged. Once the prior is fixed the run refuses every pair outside the
pairs it covers (a larger ``--limit``): their votes would change the prior of rows already written
(``refuse_more``). A pair judged but not covered counts as new: a run killed while judging under ``--limit 16``
and finished under ``--limit 8`` holds verdicts of pairs its prior never saw
(tests/test_calibration_review.py::test_a_resume_with_a_smaller_then_larger_limit_does_not_label_pairs_outside_the_prior).
A key names one pair: the store refuses a list of keys with a repeat, which would give one pair's verdict to
another.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from judge.calibration import MIN_VOTES, Prior, estimate_prior
from judge.scoring import PairVerdict, Vote, calibrate_verdicts, make_verdict
from plumbing import atomic
from plumbing.hashing import sha256_of
from plumbing.runs import read_manifest

FOLDER = "calibration"


def verdict_record(key: str, verdict: PairVerdict) -> dict:
    """One judged pair as read: its key (the pair's id), principle draws and raw votes."""
    if any(v.p_a_raw is not None for v in verdict.votes):
        raise ValueError("the calibration store keeps verdicts as read; this one is calibrated already")
    return {"key": key, "principle_ids": list(verdict.principle_ids),
            "votes": [{"principle_id": v.principle_id, "order": v.order, "p_a": v.p_a, "reason": v.reason}
                      for v in verdict.votes]}


def verdict_from_record(record: dict) -> PairVerdict:
    votes = [Vote(v["principle_id"], v["order"], v["p_a"], v["reason"]) for v in record["votes"]]
    return make_verdict(votes, record["principle_ids"])


class CalibrationStore:
    """The raw verdicts and the prior of one calibrated run (module docstring)."""

    def __init__(self, run_dir: str | Path, spec_sha256: str):
        self.folder = Path(run_dir) / FOLDER
        self.tag = spec_sha256[:16]

    @property
    def prior_path(self) -> Path:
        return self.folder / f"prior-{self.tag}.json"

    def _batches(self) -> list[Path]:
        return sorted(self.folder.glob(f"verdicts-{self.tag}-*.jsonl"))

    def records(self) -> dict[str, dict]:
        """``key -> record`` of every pair judged so far under this spec."""
        out: dict[str, dict] = {}
        for f in self._batches():
            for line in f.read_text().splitlines():
                record = json.loads(line)
                out[record["key"]] = record
        return out

    def add(self, records: Sequence[dict]) -> None:
        """One batch's verdicts, in one file written atomically."""
        if not records:
            return
        self.folder.mkdir(exist_ok=True)
        name = f"verdicts-{self.tag}-{len(self._batches()):05d}.jsonl"
        atomic.write_text(self.folder / name, "".join(json.dumps(r) + "\n" for r in records))

    def fixed(self) -> tuple[Prior, frozenset[str]] | None:
        """The prior fixed for this run and the keys of the pairs it covers, or None before it is fixed."""
        if not self.prior_path.is_file():
            return None
        recorded = json.loads(self.prior_path.read_text())
        return Prior.from_dict(recorded), frozenset(recorded.get("pairs", ()))

    def prior(self) -> Prior | None:
        """The prior fixed for this run, or None before its rows are labelled."""
        fixed = self.fixed()
        return None if fixed is None else fixed[0]

    def _fix(self, keys: Sequence[str], verdicts: Sequence[PairVerdict], min_votes: int) -> Prior:
        """Estimate the prior over ``verdicts`` (those of the pairs ``keys``) and record it with the keys."""
        prior = estimate_prior([v for verdict in verdicts for v in verdict.votes], min_votes)
        self.folder.mkdir(exist_ok=True)
        atomic.write_text(self.prior_path, json.dumps({**prior.to_dict(), "pairs": sorted(keys)}, indent=2) + "\n")
        return prior

    def calibrated(self, keys: Sequence[str], min_votes: int = MIN_VOTES) -> tuple[list[PairVerdict], Prior]:
        """Every pair of the run is judged: the verdicts of ``keys`` calibrated by the run's prior, and that
        prior. Unless it was fixed already, the prior is fixed here over exactly ``keys`` (all of the run's
        pairs); once fixed, ``keys`` must be pairs it covers (``open_store`` refuses the others first)."""
        keys = list(keys)
        if repeated := [k for k, n in Counter(keys).items() if n > 1]:
            raise ValueError(f"pair key {repeated[0]!r} is given more than once; each pair needs its own key in the calibration "
                             f"store, or one pair is labelled with another's verdict")
        fixed = self.fixed()
        if fixed is not None and (outside := [k for k in keys if k not in fixed[1]]):
            raise ValueError(f"{len(outside)} pair(s), e.g. {outside[0]!r}, are not covered by the run's prior")
        records = self.records()
        raw = [verdict_from_record(records[k]) for k in keys]
        return calibrate_verdicts(raw, fixed[0] if fixed is not None else self._fix(keys, raw, min_votes))

    def refuse_more(self, keys: Sequence[str], error: type[Exception], how: str) -> None:
        """Raise ``error`` when the prior is fixed and ``keys`` (the pairs asked for) hold pairs it does not
        cover, judged already or not: the prior was estimated without them."""
        fixed = self.fixed()
        if fixed is None:
            return
        prior, covered = fixed
        extra = len(set(keys) - covered)
        if not extra:
            return
        labels = (f"its labels are calibrated by the prior of its {len(covered)} pairs ({prior.votes} votes)"
                  if prior.applied else
                  f"its labels are the probabilities as read (the prior of its {len(covered)} pairs had {prior.votes} "
                  f"scored votes, fewer than the {prior.min_votes} batch calibration needs, and was not applied)")
        raise error(f"{self.folder.parent}: {labels}; judging {extra} more pair{'' if extra == 1 else 's'} would "
                    f"change the prior of rows already written; {how}")

    def clear(self, keep_own: bool = True) -> None:
        """Remove what another spec left here (an ``--overwrite`` that changed the spec), and with
        ``keep_own=False`` this spec's files too (an ``--overwrite`` that starts the same spec over)."""
        if not self.folder.is_dir():
            return
        for f in self.folder.iterdir():
            if keep_own and f"-{self.tag}" in f.name:
                continue
            if f.is_dir():
                shutil.rmtree(f)
            else:
                f.unlink()


def open_store(run_dir: str | Path, spec: dict, mode: str, keys: Sequence[str], error: type[Exception],
               how: str) -> CalibrationStore:
    """The store of a calibrated run about to be opened in ``mode`` (``plumbing.runs.check_out_dir``), whose
    input holds the pairs ``keys``. A run of this spec whose prior is fixed is refused pairs its prior does
    not cover (``refuse_more``), before anything in its folder is touched."""
    store = CalibrationStore(run_dir, sha256_of(spec))
    if mode == "resume" and read_manifest(run_dir).get("spec_sha256") == sha256_of(spec):
        store.refuse_more(keys, error, how)
    return store
