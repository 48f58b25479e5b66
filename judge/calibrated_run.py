"""The whole-run prior of ``--calibrate batch`` (judge/calibration.py) in a stage that writes batch by batch.

A calibrated label depends on the prior, and the prior on every vote of the run, so a stage that
calibrates labels nothing while it judges. It keeps each batch's verdicts AS READ in
``<run>/calibration/verdicts-<spec>-NNNNN.jsonl`` (one file per batch, written atomically; ``<spec>`` the
first 16 hex digits of the run's spec hash, so verdicts of another spec are never read), and writes its
rows only when every pair is judged: the prior is estimated once over all of the run's verdicts, written
to ``prior-<spec>.json`` BEFORE any row, and every row is labelled with it.

Hence a label depends neither on the batch size nor on where a resumed run restarted: a resumed run
reads the verdicts it has, judges only the others and estimates the prior an uninterrupted run estimates
(tests/test_calibration_runs.py::test_calibrated_labels_do_not_depend_on_batch_size_or_resume); a run killed
while writing its rows finds the prior and labels the rest with it. JSON keeps a float exactly, so
verdicts read back are the verdicts judged. Once the prior is fixed the run refuses to judge more pairs
(a larger ``--limit``): their votes would change the prior of rows already written (``refuse_more``).
"""

from __future__ import annotations

import json
import shutil
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

    def prior(self) -> Prior | None:
        """The prior fixed for this run, or None before its rows are labelled."""
        if not self.prior_path.is_file():
            return None
        return Prior.from_dict(json.loads(self.prior_path.read_text()))

    def fix_prior(self, verdicts: Sequence[PairVerdict], min_votes: int = MIN_VOTES) -> Prior:
        """The run's prior: the one recorded, else estimated over ``verdicts`` (all of the run's) and recorded."""
        fixed = self.prior()
        if fixed is not None:
            return fixed
        prior = estimate_prior([v for verdict in verdicts for v in verdict.votes], min_votes)
        self.folder.mkdir(exist_ok=True)
        atomic.write_text(self.prior_path, json.dumps(prior.to_dict(), indent=2) + "\n")
        return prior

    def calibrated(self, keys: Sequence[str]) -> tuple[list[PairVerdict], Prior]:
        """Every pair of the run is judged: the verdicts of ``keys`` (all of the run's pairs) calibrated
        by the run's prior, fixed here over all of them unless it was already, and that prior."""
        records = self.records()
        raw = [verdict_from_record(records[k]) for k in keys]
        return calibrate_verdicts(raw, self.fix_prior(raw))

    def refuse_more(self, pending: int, error: type[Exception], how: str) -> None:
        """Raise ``error`` when the prior is fixed and ``pending`` more pairs were asked for."""
        fixed = self.prior()
        if fixed is not None and pending:
            raise error(f"{self.folder.parent}: its labels are calibrated by the prior of its {fixed.votes} votes; "
                        f"judging {pending} more pair{'' if pending == 1 else 's'} would change the prior of rows "
                        f"already written; {how}")

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
    input holds the pairs ``keys``. A run of this spec whose prior is fixed is refused pairs it has not
    judged (``refuse_more``), before anything in its folder is touched."""
    store = CalibrationStore(run_dir, sha256_of(spec))
    if mode == "resume" and read_manifest(run_dir).get("spec_sha256") == sha256_of(spec):
        cached = store.records()
        store.refuse_more(sum(k not in cached for k in keys), error, how)
    return store
