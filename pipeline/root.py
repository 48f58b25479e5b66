"""Whose files a pipeline root holds: ``rlaif run`` (pipeline/loop.py) writes only into a root it made, and
replaces only what it wrote there.

A root is ours when its ``pipeline.json`` says so: ``{"format": "rlaif-pipeline", "version": 1, ...}``. Any
other ``pipeline.json`` -- another tool's, a file that is not JSON, or the state of an rlaif run from before
this marker existed -- is refused in one line and the root is left as it is: the loop does not resume a root
it cannot show it made (a new root starts the loop over).

Inside our root every entry must be ours: the state and its lock, ``logs/``, the folders of the stages the
state names, those stages' hidden work folders beside them (``.<stage>.*``: an atomic write's temp folder, an
align output moved aside, PPO's checkpoints), and ``report.md`` / ``judge_labels.png`` only while their
sha256 is one the state recorded when the loop wrote them. A stage that runs again replaces its folder, so
each file there must be one the state listed when the stage last finished, or one its run-directory writer
makes (shards, manifest, errors, log, caches: what a stage killed before it finished leaves). Anything else --
a user's notes, an edited report, a LICENSE put into ``publish/`` -- is named in one line before anything is
created or replaced, with the fix: move it out (an error never asks a user to delete a file). The checks are
made before the root is created, again once the run holds the root's lock, and for each stage's folder just
before the stage replaces it (tests/test_user_files.py). Publish's dry run writes only into an empty folder
(publish/upload.py), so the loop empties its own earlier preview first, file by file, deleting only what the
state listed (``clear_stage_folder``): a file put there meanwhile stays, and the stage refuses the folder.

Roots written before the marker (their ``pipeline.json`` holds ``stages`` and ``recipe`` and no ``format``) are
refused like any other ``pipeline.json``: nothing in such a file shows it is ours, and adopting it would let any
file of that shape hand its folder to the loop. Nothing of such a root is changed; its stage folders stay what
they were, run directories and models that the stage commands read (``rlaif align dpo --data OLD/judge``) and a
new root's recipe can name as inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.report import LABELS_PNG, REPORT
from pipeline.stages import stages
from plumbing.atomic import write_bytes, write_text
from plumbing.hashing import file_sha256

FORMAT, VERSION = "rlaif-pipeline", 1
STATE, LOCK = "pipeline.json", ".pipeline.lock"
LOGS = "logs"
WRITTEN = (REPORT, LABELS_PNG)  # the files of the root the loop writes (pipeline/report.py)
# The stages (pipeline/stages.py STAGES), read when a root is checked, so a stage registered since is one too:
# ``run_dir`` stages' folders are run directories (plumbing/runs.py): a resume keeps their files, a re-run clears
# its own; ``cleared`` stages' commands write only into a new or empty folder (publish's dry run): the loop empties
# it first. Hidden names the loop's own writes leave in the root (``_hidden``): temps of the state, the report and
# its figure, and the stages' work folders beside their output (plumbing/atomic.py, align/output.py,
# align/ppo/config.py).
def _hidden(name: str) -> bool:
    names = "|".join(re.escape(n) for n in (*stages(), STATE, REPORT, LABELS_PNG))
    return re.match(rf"^\.({names})\..+", name) is not None


# What a run directory's writers make in it, so a stage killed before it finished (and so before its files
# were listed) still holds only ours: plumbing/runs.py (manifest, shards, errors, lock, log), the metrics the
# loop adds, eval's outputs and response caches (evaluation/report.py, evaluation/inputs.py) and a
# calibrated judge's store (judge/calibrated_run.py); ``.<name>.tmp`` is an atomic write's temp name.
RUN_FILES = re.compile(r"^(manifest\.json|errors\.jsonl|metrics\.json|\.lock|logs/rlaif\.log|report\.md"
                       r"|win_rate_per_principle\.png|verdict_vs_length\.png"
                       r"|data/[A-Za-z_][A-Za-z0-9_]*-\d{5}-\d{9}\.parquet|responses/[a-z]+-\d{5}\.jsonl"
                       r"|calibration/(prior-[0-9a-f]{16}\.json|verdicts-[0-9a-f]{16}-\d{5}\.jsonl)"
                       r"|([^/]+/)*\.[^/]+\.tmp)$")


def new_state() -> dict:
    return {"format": FORMAT, "version": VERSION, "stages": {}, "written": {}}


def save_state(root: Path, state: dict) -> None:
    write_text(root / STATE, json.dumps(state, indent=2, sort_keys=True) + "\n")


def read_state(root: Path) -> dict:
    """The root's state, or a new one when it has none; a ``pipeline.json`` that is not ours is refused."""
    path = root / STATE
    if not path.exists():
        return new_state()
    foreign = (f"root {root}: its {STATE} is not a state of rlaif run (no \"format\": \"{FORMAT}\" marker: another "
               f"tool's file, or a root of an rlaif from before the marker), so the folder is not one rlaif run may "
               f"write into; give the recipe another root (a new or empty folder)")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError):
        raise PipelineError(foreign) from None
    except OSError as e:
        raise PipelineError(f"root {root}: {STATE} cannot be read ({e.strerror or e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise PipelineError(foreign)
    if state.get("version") != VERSION or not isinstance(state.get("stages"), dict) \
            or not isinstance(state.setdefault("written", {}), dict):
        raise PipelineError(f"root {root}: {STATE} is an rlaif-pipeline state of version {state.get('version')!r}, "
                            f"which this rlaif (version {VERSION}) does not read; use the rlaif that made it, or "
                            f"choose another root")
    return state


def listing(folder: Path) -> list[str]:
    """Every file (and symlink) under ``folder``, as sorted relative POSIX paths; symlinks are not followed."""
    out = []
    for top, dirs, files in os.walk(folder):
        here = Path(top).relative_to(folder)
        out += [(here / d).as_posix() for d in dirs if (Path(top) / d).is_symlink()]
        out += [(here / f).as_posix() for f in files]
    return sorted(out)


def check_root(root: Path, state: dict) -> None:
    """Refuse, in one line and before anything is written, a root (with its state ``state``) holding anything
    that is not ours."""
    if root.exists() and not root.is_dir():
        raise PipelineError(f"root {root} is a file; give a folder")
    if not root.exists():
        return
    names = sorted(p.name for p in root.iterdir())
    if STATE not in names:
        if set(names) - {LOCK}:  # a lock alone: a run stopped before it wrote its state
            raise PipelineError(f"root {root} is not empty and holds no {STATE}; choose an empty or new folder")
        return
    for name in names:
        why = _not_ours(root / name, state)
        if why:
            raise PipelineError(f"root {root}: {why}; move it out of the root (a root holds only what rlaif run "
                                f"wrote there)")


def _not_ours(path: Path, state: dict) -> str | None:
    name = path.name
    if name in (STATE, LOCK) or _hidden(name) or (name == LOGS and path.is_dir() and not path.is_symlink()):
        return None
    if name in stages() and path.is_dir() and not path.is_symlink():
        if name in state["stages"] or not any(path.iterdir()):  # a stage's folder, or an empty one: nothing to lose
            return None
        return f"{name}/ was not made by rlaif run (no stage {name} in {STATE})"
    if name in WRITTEN and path.is_file() and not path.is_symlink():
        if file_sha256(path) in state["written"].get(name, []):
            return None
        return f"{name} is not the one rlaif run wrote (edited since, or someone else's)"
    return f"{name} was not written by rlaif run"


def check_stage_folder(root: Path, state: dict, stage: str) -> None:
    """Refuse to replace ``<root>/<stage>`` while it holds a file the loop did not write there: one the state
    did not list when the stage last finished, and (for a run directory) none its writers make."""
    folder = root / stage
    if not folder.is_dir():
        return
    recorded = set((state["stages"].get(stage) or {}).get("files") or [])
    strays = [f for f in listing(folder) if f not in recorded and not (stages()[stage].run_dir and RUN_FILES.match(f))]
    if strays:
        more = f" (and {len(strays) - 1} more)" if len(strays) > 1 else ""
        raise PipelineError(f"root {root}: {stage}/{strays[0]}{more} was not written by rlaif run, and the {stage} "
                            f"stage is about to replace its folder; move it out of {folder}")


def replaces(stage: str, action: str) -> bool:
    """Whether a step replaces its stage's folder: a run directory (``run_dir``) that runs again is cleared, one
    that resumes keeps its shards; a model or publish folder is replaced whole."""
    return action == "run" or (action == "resume" and not stages()[stage].run_dir)


def clear_stage_folder(root: Path, state: dict, stage: str) -> None:
    """Empty ``<root>/<stage>`` for a command that writes only into an empty folder: refuse a file the state did
    not list (``check_stage_folder``), then delete the listed files one by one and the folders they leave empty.
    A file that appears meanwhile is not deleted: the folder stays non-empty and the command refuses it."""
    check_stage_folder(root, state, stage)
    folder = root / stage
    if not folder.is_dir() or folder.is_symlink():
        return
    for rel in (state["stages"].get(stage) or {}).get("files") or []:
        (folder / rel).unlink(missing_ok=True)
    for top, dirs, _ in os.walk(folder, topdown=False):
        for d in dirs:
            sub = Path(top) / d
            if not sub.is_symlink() and not any(sub.iterdir()):
                sub.rmdir()
    if not any(folder.iterdir()):
        folder.rmdir()


def write_root_files(root: Path, state: dict, files: dict[str, bytes]) -> None:
    """Write the loop's own files of the root (report.md and its figure), each sha256 recorded in the state as
    ours before the file is written, so a kill between the two leaves either version ours; one that is not ours
    (``check_root``'s rule) is refused, not replaced."""
    for name in files:  # a user's report put there while the stages ran is not replaced either
        path = root / name
        why = _not_ours(path, state) if path.exists() or path.is_symlink() else None
        if why:
            raise PipelineError(f"root {root}: {why}; the stages finished and the report was not written: move it "
                                f"out of the root and run again to write the report")
    shas = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    _record(state, shas, keep_old=True)
    save_state(root, state)
    for name, data in files.items():
        write_bytes(root / name, data)
    _record(state, shas, keep_old=False)
    save_state(root, state)


def _record(state: dict, shas: dict[str, str], *, keep_old: bool) -> None:
    for name, sha in shas.items():
        old = state["written"].get(name, []) if keep_old else []
        state["written"][name] = sorted({*old, sha})
