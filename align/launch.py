"""Multi-process training: re-launch ``rlaif align <method>`` under ``accelerate launch``.

The parent checks the recipe and the data (fast, no model), writes the resolved recipe to a
temporary YAML file and starts ``accelerate launch ... -m rlaif align <method> --config FILE``;
each child trains with TRL as usual and accelerate/torch.distributed does the rest (STYLE: no
home-made distribution layer).

* GPUs: ``--accelerate-config recipes/accelerate/zero3.yaml`` (or zero2.yaml, ddp.yaml);
  ``--num-processes`` overrides the file's ``num_processes``.
* CPU only (tests, laptops): accelerate 1.15's ``--cpu`` flag goes through its *simple* launcher,
  which starts ONE process unless MPI is configured; so without a config file we use its torchrun
  launcher (``--multi_gpu``) with ``ACCELERATE_USE_CPU=true``, and each process joins a gloo
  group as accelerate's ``MULTI_CPU`` (``recipes/accelerate/cpu-ddp.yaml`` says the same as a file).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from align.config import RecipeError

log = logging.getLogger(__name__)

LAUNCHED = "RLAIF_ALIGN_LAUNCHED"  # set in children, so they train instead of launching again
WORK_DIR = "RLAIF_ALIGN_WORK_DIR"  # the parent's temp folder the children write into (align/output.py)


def in_child() -> bool:
    return os.environ.get(LAUNCHED) == "1" or int(os.environ.get("WORLD_SIZE", "1")) > 1


def writes_for_parent() -> bool:
    """A child started by ``run_launched``: it trains into the parent's temp folder, the parent renames it."""
    return in_child() and bool(os.environ.get(WORK_DIR))


def should_launch(num_processes: int | None, accelerate_config: str | None) -> bool:
    if num_processes is not None and num_processes < 1:  # 0 used to mean one process, silently
        raise RecipeError(f"--num-processes {num_processes}: train in at least 1 process")
    if in_child():
        return False
    return bool(accelerate_config) or (num_processes or 1) > 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def accelerate_command(method: str, recipe_file: str, num_processes: int | None,
                       accelerate_config: str | None) -> tuple[list[str], dict[str, str]]:
    """The ``accelerate launch`` command line and environment for the children."""
    env = {**os.environ, LAUNCHED: "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config:
        if not Path(accelerate_config).is_file():
            raise RecipeError(f"--accelerate-config {accelerate_config}: no such file; see recipes/accelerate/")
        cmd += ["--config_file", str(accelerate_config)]
    else:
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        if (num_processes or 1) > 1:
            cmd += ["--multi_gpu"]  # the torchrun launcher; see the module docstring for CPU
    if num_processes:
        cmd += ["--num_processes", str(num_processes)]
    if not _has_gpu():
        env["ACCELERATE_USE_CPU"] = "true"
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(num_processes or 1, 1))))
    cmd += ["--main_process_port", str(_free_port()), "-m", "rlaif", "align", method, "--config", recipe_file]
    return cmd, env


def launch(recipe, num_processes: int | None, accelerate_config: str | None,
           work_dir: str | Path | None = None) -> int:
    """Run ``recipe`` in ``num_processes`` processes writing into ``work_dir``; returns the launcher's exit code."""
    import yaml

    with tempfile.TemporaryDirectory(prefix="rlaif-align-") as tmp:
        recipe_file = Path(tmp) / f"{recipe.method}.yaml"
        recipe_file.write_text(yaml.safe_dump({"method": recipe.method, **recipe.model_dump(mode="json")},
                                              sort_keys=False))
        cmd, env = accelerate_command(recipe.method, str(recipe_file), num_processes, accelerate_config)
        if work_dir is not None:
            env[WORK_DIR] = str(work_dir)
        log.info("launching: %s", " ".join(cmd))
        return subprocess.run(cmd, env=env, check=False).returncode


def run_launched(recipe, num_processes: int | None, accelerate_config: str | None, overwrite: bool = False) -> int:
    """Check output_dir, the data and the model here (no weights read), then train in child processes
    writing into a temp folder that becomes output_dir only if they all succeed; returns the exit code."""
    from align.card import check_model
    from align.output import check_out, publish

    mode = check_out(recipe, overwrite)
    recipe.check_data()
    check_model(recipe.model)
    code = 0
    try:
        with publish(recipe, mode) as work_dir:
            code = launch(recipe, num_processes, accelerate_config, work_dir)
            if code != 0:
                raise _ChildrenFailed
    except _ChildrenFailed:
        log.error("training processes failed (exit code %d); %s is unchanged", code, recipe.output_dir)
    return code


class _ChildrenFailed(Exception):
    """The launched processes failed: the temp folder is dropped and output_dir left as it was."""
