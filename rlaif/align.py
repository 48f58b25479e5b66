"""``rlaif align sft|reward|dpo|grpo|ppo``: train on a run directory from a recipe or the quick flags.

    rlaif align dpo --config recipes/cpu-tiny-dpo.yaml --set beta=0.2 --set trl.warmup_steps=0.1
    rlaif align dpo --data runs/judge --model smollm2-135m --out models/dpo --max-steps 100
    rlaif align dpo --config recipes/gpu-7b-dpo.yaml --accelerate-config recipes/accelerate/zero3.yaml
    rlaif align grpo --data runs/gsm8k --model smollm2-135m --reward gsm8k --out models/grpo --max-steps 20
    rlaif align ppo --prompts runs/gen --reward-model models/rm --model smollm2-135m --out models/ppo --max-steps 40
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from align import ALIGN_METHODS

align_app = typer.Typer(help="Train on AI feedback: SFT on revisions, reward models and DPO on preferences, "
                             "GRPO on verifiable rewards.",
                        no_args_is_help=True)


def _train(method: str, config: Path | None, sets: list[str], data: str | None, model: str | None,
           out: str | None, max_steps: int | None, num_processes: int, accelerate_config: str | None,
           quiet: bool, overwrite: bool, extra: dict | None = None) -> None:
    from align import load_recipe
    from align.launch import run_launched, should_launch, writes_for_parent
    from plumbing.recipes import RecipeError

    if config is None and not (data and out):
        need = "--prompts FILE|RUN_DIR, --reward-model DIR" if "prompts" in ALIGN_METHODS[method].flags \
            else "--data RUN_DIR"
        raise RecipeError(f"give --config RECIPE.yaml, or {need} and --out DIR (rlaif align {method} --help)")
    quick = {"data": data, "model": model, "output_dir": out, "max_steps": max_steps, "quiet": quiet or None,
             **(extra or {})}
    recipe = load_recipe(method, config, sets, quick)
    if should_launch(num_processes, accelerate_config):
        code = run_launched(recipe, num_processes, accelerate_config, overwrite)
        if code == 0:
            _report(method, json.loads((Path(recipe.output_dir) / "metrics.json").read_text()), recipe.output_dir)
        raise typer.Exit(code)
    from align import run

    metrics = run(recipe, overwrite=overwrite)
    if metrics.get("method") and not writes_for_parent():  # rank 0; a launching parent reports itself
        _report(method, metrics, recipe.output_dir)


def _report(method: str, metrics: dict, out: str) -> None:
    final = {k: v for k, v in (metrics.get("eval") or {}).items() if isinstance(v, float)}
    shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(final.items()) if "runtime" not in k
                      and "per_second" not in k)
    typer.echo(f"{method}: {metrics['global_step']} steps, saved to {out}" + (f" ({shown})" if shown else ""))


def _make(method: str, flags: tuple[str, ...]):
    """The `rlaif align <method>` command; the options of ``flags`` are shown only for the methods taking them."""
    takers = {flag: "|".join(m for m, entry in ALIGN_METHODS.items() if flag in entry.flags)
              for flag in ("reward", "prompts")}

    def command(
        config: Path = typer.Option(None, "--config", help="Recipe YAML (see recipes/)."),
        sets: list[str] = typer.Option([], "--set", help="Override a recipe key: key=value, e.g. trl.bf16=true."),
        data: str = typer.Option(None, "--data", help="Run directory or dataset file (quick form)."),
        model: str = typer.Option(None, "--model", help="Base model: smollm2-135m, a folder or a Hub id."),
        out: str = typer.Option(None, "--out", help="Output folder for the trained model."),
        # min=1: a recipe's max_steps -1 (train num_train_epochs) is no flag value; 0 processes is none
        max_steps: int = typer.Option(None, "--max-steps", min=1, help="Stop after this many optimizer steps "
                                      "(default: the recipe's, else num_train_epochs)."),
        num_processes: int = typer.Option(1, "--num-processes", min=1, help="Train in this many processes "
                                          "(accelerate launch; DDP over gloo on CPU)."),
        accelerate_config: str = typer.Option(None, "--accelerate-config",
                                              help="accelerate config file, e.g. recipes/accelerate/zero3.yaml."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier `rlaif align "
                                       f"{method}` output in --out (nothing else is ever replaced)."),
        reward: list[str] = typer.Option([], "--reward", help="GRPO reward: gsm8k, math, code, format, length or "
                                         "module:function; repeat for several (weights: --set reward_weights=[1,0.5]).",
                                         hidden="reward" not in flags),
        prompts: str = typer.Option(None, "--prompts", help="PPO prompts: a file `rlaif generate` reads, or a run "
                                    "directory (quick form; same as --data).", hidden="prompts" not in flags),
        reward_model: str = typer.Option(None, "--reward-model", help="PPO reward model: the --out folder of "
                                         "`rlaif align reward`.", hidden="reward_model" not in flags),
    ) -> None:
        from plumbing.recipes import RecipeError

        if reward and "reward" not in flags:
            raise RecipeError(f"--reward is for `rlaif align {takers['reward']}`; `rlaif align {method}` takes no "
                              f"reward")
        if (prompts and "prompts" not in flags) or (reward_model and "reward_model" not in flags):
            raise RecipeError(f"--prompts and --reward-model are for `rlaif align {takers['prompts']}`; "
                              f"`rlaif align {method}` reads --data")
        if prompts and data:
            raise RecipeError("give --prompts or --data, not both (they are the same option)")
        _train(method, config, sets, data or prompts, model, out, max_steps, num_processes, accelerate_config, quiet,
               overwrite, {"reward_funcs": reward or None, "reward_model": reward_model})

    command.__doc__ = ALIGN_METHODS[method].help
    return command


def _mount() -> None:
    """One command per registered method (align/__init__.py ALIGN_METHODS), in the registry's order."""
    for name, entry in ALIGN_METHODS.items():
        align_app.command(name)(_make(name, entry.flags))


_mount()


def register(app: typer.Typer) -> None:
    app.add_typer(align_app, name="align")
