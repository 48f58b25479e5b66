"""What every trained model folder holds besides weights: README.md (model card), metrics.json and
training_curve.png (loss vs step; the eval metric when there is one).

The card records what a reader needs to reproduce or distrust the model: the base model, the
data run with its constitution sha256 (from the rows' ``constitution_sha256`` column and the
run manifest), the full recipe, and the final metrics.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from plumbing.recipes import RecipeError

log = logging.getLogger(__name__)

CURVE = "training_curve.png"
METRICS = "metrics.json"
# method -> (eval metric plotted beside the loss, TRL log key of a train metric worth a curve)
PLOTTED = {"sft": ("eval_mean_token_accuracy", "mean_token_accuracy"),
           "reward": ("eval_accuracy", "accuracy"),
           "dpo": ("eval_rewards/margins", "rewards/margins"),
           "grpo": ("eval_reward", "reward")}


def resolve_model(name: str) -> str:
    """The folder or Hub id trainers load, after ``check_model``; converts an embedded model on first use."""
    from generator.models import resolve

    kind = check_model(name)
    if kind == "embedded":
        return resolve(name)
    return str(Path(name).expanduser()) if kind == "folder" else name


def check_model(name: str, hub_timeout_s: float = 10.0) -> str:
    """Where ``name`` will load from, checked without reading any weights; raises RecipeError otherwise.

    Returns "embedded" (smollm2-135m), "folder" (a local folder with config.json or a PEFT
    adapter_config.json), "cache" (a Hub id already in the Hugging Face cache) or "hub" (a Hub id the
    Hub knows). The Hub is asked only when the cache lacks the id and HF_HUB_OFFLINE is unset, with
    one request of at most ``hub_timeout_s``; letting transformers find out instead took 34 s on a
    box without network and ended in a traceback (tests/test_align_outputs.py:
    test_unknown_model_fails_at_once, test_model_check_answers_within_its_timeout,
    test_model_folders_are_checked)."""
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError
    from huggingface_hub.utils import validate_repo_id

    from generator.models import EMBEDDED

    if name in EMBEDDED:
        return "embedded"
    path = Path(name).expanduser()
    choices = f"give an embedded name ({', '.join(EMBEDDED)}), a local model folder or a Hugging Face Hub id"
    if path.is_dir():
        if not any((path / f).is_file() for f in ("config.json", "adapter_config.json")):
            raise RecipeError(f"model {name}: the folder has no config.json (nor a PEFT adapter_config.json), so it "
                              f"is not a model; {choices}")
        return "folder"
    if path.exists() or name.startswith(("/", ".", "~")) or name.count("/") > 1:
        raise RecipeError(f"model {name}: no such model folder; {choices}")
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise RecipeError(f"model {name!r}: not an embedded name, a local folder or a valid Hub id; {choices}") from None
    if isinstance(huggingface_hub.try_to_load_from_cache(name, "config.json"), str):
        return "cache"
    if huggingface_hub.is_offline_mode():
        raise RecipeError(f"model {name}: not an embedded name or a local folder, and not in the Hugging Face cache "
                          f"(HF_HUB_OFFLINE=1 forbids downloading it); {choices}, or unset HF_HUB_OFFLINE")
    try:
        huggingface_hub.HfApi().model_info(name, timeout=hub_timeout_s)
    except GatedRepoError:
        raise RecipeError(f"model {name}: gated on the Hugging Face Hub; accept its terms on "
                          f"https://huggingface.co/{name} and log in (`hf auth login`)") from None
    except RepositoryNotFoundError:
        raise RecipeError(f"model {name}: not an embedded name or a local folder, and no such model on the Hugging "
                          f"Face Hub (a private one needs `hf auth login`); {choices}") from None
    except Exception as e:  # noqa: BLE001 - network, TLS, proxy and HTTP failures all mean "cannot check"
        raise RecipeError(f"model {name}: not an embedded name or a local folder, and the Hugging Face Hub cannot be "
                          f"reached to find it ({type(e).__name__}: {' '.join(str(e).split())[:120]}); {choices}, "
                          f"or set HF_HUB_OFFLINE=1 to use only local models") from None
    return "hub"


def finish(trainer, recipe, data, train_result) -> dict[str, Any]:
    """Evaluate on the held-out rows, save the model, write card + metrics + curve (rank 0 only)."""
    metrics: dict[str, Any] = {"train": dict(train_result.metrics)}
    if data.eval is not None:
        metrics["eval"] = trainer.evaluate()
    out = Path(trainer.args.output_dir)  # recipe.work_dir: align.run renames it to output_dir at the end
    trainer.save_model(str(out))
    if not trainer.is_world_process_zero():
        return metrics
    history = trainer.state.log_history
    last = next((h for h in reversed(history) if "loss" in h), {})
    metrics.update({"method": recipe.method, "global_step": trainer.state.global_step,
                    "world_size": trainer.args.world_size, "last_train_log": last, "log_history": history})
    (out / METRICS).write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    plot_curve(history, recipe.method, out / CURVE)
    write_card(out, recipe, data, metrics)
    log.info("wrote %s model, card, metrics and curve to %s", recipe.method, out)
    return metrics


def plot_curve(history: list[dict], method: str, path: Path) -> None:
    """Loss vs step (train, and eval when logged); a second panel for the method's metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eval_key, train_key = PLOTTED[method]
    series = {
        "train loss": [(h["step"], h["loss"]) for h in history if "loss" in h],
        "eval loss": [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h],
    }
    second = {
        train_key: [(h["step"], h[train_key]) for h in history if train_key in h and "loss" in h],
        eval_key: [(h["step"], h[eval_key]) for h in history if eval_key in h],
    }
    panels = 2 if any(second.values()) else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.5), squeeze=False)
    for ax, group, ylabel in zip(axes[0], (series, second), ("loss", "metric"), strict=False):
        for label, points in group.items():
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o" if len(points) < 30 else None, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"rlaif align {method}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _final_table(metrics: dict[str, Any]) -> str:
    rows = []
    for part in ("train", "last_train_log", "eval"):
        for key, value in sorted((metrics.get(part) or {}).items()):
            if isinstance(value, int | float):
                rows.append(f"| {part} | {key} | {value:.6g} |")
    return "\n".join(["| split | metric | value |", "|---|---|---|", *rows]) if rows else "(no metrics)"


def write_card(out: Path, recipe, data, metrics: dict[str, Any]) -> None:
    import yaml

    prov = data.provenance
    shas = prov.get("constitution_sha256") or ([prov["spec_constitution_sha256"]]
                                               if "spec_constitution_sha256" in prov else [])
    front = {"base_model": recipe.model if not Path(recipe.model).exists() else None,
             "library_name": "transformers", "tags": ["rlaif", "trl", recipe.method, "constitutional-ai"]}
    front = {k: v for k, v in front.items() if v is not None}
    recipe_yaml = yaml.safe_dump({"method": recipe.method, **recipe.model_dump(mode="json")}, sort_keys=False)
    lines = [
        "---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
        f"# {Path(recipe.output_dir).name}: rlaif align {recipe.method}", "",
        f"Trained with `rlaif align {recipe.method}` (TRL {_version('trl')}, transformers "
        f"{_version('transformers')}) for {metrics.get('global_step')} steps on "
        f"{metrics.get('world_size')} process(es).", "",
        "## Base model", "", f"`{recipe.model}`", "",
        "## Data", "",
        f"- source: `{data.source}` ({f'a {data.stage!r} run' if data.stage else 'a dataset file'})",
        f"- rows: {len(data.train)} train, {len(data.eval) if data.eval is not None else 0} held out",
        f"- constitution sha256: {', '.join(f'`{s}`' for s in shas) or 'unknown (not in the data)'}",
    ]
    for key in ("run_spec_sha256", "judge_model", "model", "p_chosen_mean"):
        if prov.get(key):
            lines.append(f"- {key.replace('_', ' ')}: {prov[key]}")
    lines += ["", "## Metrics", "", _final_table(metrics), "",
              f"Training curve: [{CURVE}]({CURVE}); full log: [{METRICS}]({METRICS}).", "",
              "## Recipe", "", "```yaml", recipe_yaml.rstrip(), "```", ""]
    (out / "README.md").write_text("\n".join(lines))


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"
