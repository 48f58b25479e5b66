"""Align outputs: a model folder that appears whole or not at all, and that later runs recognise.

``output_dir`` is checked before the data or the model is read (``plumbing.runs.check_out_dir``
with the stage ``align-<method>``): absent or empty -> train; an output of ``rlaif align`` with the
same method -> replaced, but only with ``overwrite`` (``--overwrite``); a file, a folder of the
user's, a run of another stage or an align output of another method -> refused in one line and
left untouched (tests/test_align_outputs.py).

Training writes into a hidden temp folder beside ``output_dir`` (``plumbing.atomic.atomic_dir``);
at the end ``manifest.json`` (``{"stage": "align-<method>", ...}``) is added and the folder is
renamed into place, so a failed or killed run leaves ``output_dir`` as it was (a SIGKILLed run's
hidden ``.<name>.*.tmp`` folder stays beside it; delete it at leisure).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from align.config import RecipeError
from plumbing import atomic
from plumbing.runs import MANIFEST, RunError, check_out_dir, versions


def stage(method: str) -> str:
    """The manifest stage of an align output (``align-dpo``, ...)."""
    return f"align-{method}"


def check_out(recipe, overwrite: bool = False) -> str:
    """``new`` or ``replace`` for ``recipe.output_dir``; raises RecipeError (one line) for anything else."""
    name = stage(recipe.method)
    try:
        mode = check_out_dir(recipe.output_dir, name, overwrite=overwrite, flag="output_dir (--out)")
    except RunError as e:
        raise RecipeError(str(e)) from None
    if mode == "resume":
        raise RecipeError(f"output_dir (--out) {recipe.output_dir} already holds an {name} model; pass --overwrite "
                          f"to replace it, or choose another folder")
    return mode


def write_manifest(folder: str | Path, recipe) -> None:
    """``manifest.json`` of an align output: what ``check_out`` recognises, and what made the model."""
    manifest = {"stage": stage(recipe.method), "status": "complete", "method": recipe.method,
                "output_dir": str(recipe.output_dir), "recipe": recipe.model_dump(mode="json"),
                "versions": versions(), "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic.write_text(Path(folder) / MANIFEST, json.dumps(manifest, indent=2, default=str) + "\n")


@contextmanager
def publish(recipe, mode: str) -> Iterator[Path]:
    """Yield a temp folder to train into; on success add the manifest and rename it to output_dir.

    ``mode`` is ``check_out``'s answer: an existing output_dir (empty, or an output of the same
    method when replacing, checked again at that moment) is moved aside just before the rename and
    deleted after it; if the rename fails, it is put back."""
    out = Path(recipe.output_dir)
    aside = out.with_name(f".{out.name}.replaced-{os.getpid()}")
    try:
        with atomic.atomic_dir(out) as tmp:
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; the model folder gets a plain mkdir's mode
            yield tmp
            write_manifest(tmp, recipe)
            if out.exists():
                check_out(recipe, overwrite=mode == "replace")  # nothing else appeared there meanwhile
                os.replace(out, aside)
    except BaseException:
        if aside.exists() and not out.exists():
            os.replace(aside, out)
        raise
    if aside.exists():
        shutil.rmtree(aside)
