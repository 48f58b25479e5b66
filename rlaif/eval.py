"""``rlaif eval``: a policy's win-rate against a reference under the constitution judge."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import typer

from rlaif._options import NUM_GPUS, QUIET, REPLICAS, TEMPLATES

log = logging.getLogger(__name__)


def eval_(
    policy: str = typer.Option(..., "--policy", help="Model under evaluation: an `rlaif align` output folder, a "
                                                     "model folder, an embedded name or a Hub id."),
    reference: str = typer.Option(..., "--reference", help="Model the policy is compared against (same forms)."),
    prompts: Path = typer.Option(..., "--prompts", help="Prompt file (jsonl/json/parquet/csv, .gz ok; an optional "
                                                        "'answer' column) or a run directory such as `rlaif data "
                                                        "gsm8k` output."),
    out: Path = typer.Option(..., "--out", help="Eval run directory: new, empty, or an earlier eval run (resumed; "
                                                "replaced only with --overwrite)."),
    constitution: Path = typer.Option(None, "--constitution", help="Constitution YAML (default: built-in)."),
    judge_model: str = typer.Option("smollm2-135m", "--judge-model", help="Judge model: embedded name, folder or "
                                                                          "Hub id."),
    engine: str = typer.Option("auto", "--engine", help="Engine of all three models: auto | vllm | openai | "
                                                        "transformers | fake | module:Class."),
    base_url: list[str] = typer.Option(None, "--base-url", help="OpenAI-compatible server of the policy "
                                                                "(repeatable); also of the reference and the "
                                                                "judge unless given their own."),
    reference_base_url: list[str] = typer.Option(None, "--reference-base-url", help="Server(s) of the reference."),
    judge_base_url: list[str] = typer.Option(None, "--judge-base-url", help="Server(s) of the judge."),
    replicas: int = REPLICAS,
    num_gpus: float = NUM_GPUS,
    max_tokens: int = typer.Option(256, "--max-tokens", help="Most tokens per response."),
    temperature: float = typer.Option(0.0, "--temperature", help="Sampling temperature of both models "
                                                                 "(0 = greedy)."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed (with --temperature > 0), principle draws and "
                                               "bootstrap."),
    limit: int = typer.Option(None, "--limit", help="Only the first N prompts."),
    principles: int = typer.Option(4, "--principles", "--principles-per-pair", help="Principles drawn (by weight) "
                                                                                   "per prompt."),
    prompt_column: str = typer.Option(None, "--prompt-column", help="Prompt column (default: auto-detect)."),
    reward: str = typer.Option("auto", "--reward", help="Answer checker when the prompts have an 'answer' column: "
                                                        "auto | gsm8k | math | none."),
    templates: Path = TEMPLATES,
    batch_size: int = typer.Option(32, "--batch-size", help="Prompts per engine call (runtime only)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier eval run in --out (never "
                                                              "anything else)."),
    quiet: bool = QUIET,
) -> None:
    """Win-rate of --policy against --reference under the constitution judge (both orders, soft votes), with
    a bootstrap interval, per-principle win-rates, length control and, for prompts with answers, accuracy."""
    from evaluation.evaluate import EvalConfig, evaluate
    from generator.engines.options import EngineOptions
    from judge.config import JudgeConfig
    from plumbing.progress import StageProgress

    urls = base_url or []
    for flag, name in (("--policy", policy), ("--reference", reference), ("--judge-model", judge_model)):
        _check_model(flag, name)

    def options(model: str, servers: list[str]) -> EngineOptions:
        return EngineOptions(model=model, engine=engine, base_urls=servers, batch_size=batch_size,
                             replicas=replicas, num_gpus=num_gpus)

    judge = JudgeConfig(constitution=str(constitution) if constitution else None, model=judge_model, engine=engine,
                        base_urls=judge_base_url or urls, principles_per_pair=principles, seed=seed,
                        templates=str(templates) if templates else None, batch_size=batch_size,
                        replicas=replicas, num_gpus=num_gpus)
    config = EvalConfig(prompts=prompts, out=out, policy=options(policy, urls),
                        reference=options(reference, reference_base_url or urls), judge=judge,
                        max_tokens=max_tokens, temperature=temperature, seed=seed, limit=limit,
                        prompt_column=prompt_column, reward=reward, overwrite=overwrite)
    with StageProgress("eval", unit="steps", quiet=quiet) as progress:
        result = evaluate(config, progress=_warn_if_self(config, progress))
    typer.echo(summary_line(out, result))


def _identity(model: str) -> str:
    from generator.models import display_name

    shown = display_name(model)
    return os.path.realpath(shown) if os.path.isdir(shown) else shown


def _warn_if_self(config, progress: Callable[[int, int], None]) -> Callable[[int, int], None]:
    """``progress``, which first warns (one line) when the policy and the reference are one model on the same
    servers: the win-rate then measures nothing but the judge's noise. Said at the first report, which
    comes after the input is checked, so a refused command still prints its one error line only."""
    p, r = config.policy, config.reference
    if _identity(p.model) != _identity(r.model) or list(p.base_urls) != list(r.base_urls):
        return progress
    said = []

    def report(done: int, total: int) -> None:
        if not said:
            said.append(True)
            log.warning("--policy and --reference are the same model (%s): it is compared with itself, so the "
                        "win-rate is about 0.5 whatever the model; give the trained model as --policy",
                        _identity(p.model))
        progress(done, total)

    return report


def _check_model(flag: str, name: str) -> None:
    """A model named by a path that is no folder is refused with the flag that named it."""
    from generator.models import ModelError, check_local_model

    try:
        check_local_model(name)
    except ModelError as e:
        raise ModelError(f"{flag}: {e}") from None


def _show(m: dict | None) -> str:
    if not m or m.get("value") is None:
        return "n/a"
    return f"{m['value']:.3f}" + ("" if m.get("lo") is None else f" [{m['lo']:.3f}, {m['hi']:.3f}]")


def summary_line(out: Path, result: dict) -> str:
    w = result["win_rate"]
    acc = result["accuracy"]
    answers = "" if not acc else (f"; accuracy ({acc['reward']}): policy {_show(acc['policy'])}, reference "
                                  f"{_show(acc['reference'])}")
    return (f"{out}: win-rate {_show(w)} over {w['n']} prompts ({w['wins']} won, {w['losses']} lost, {w['ties']} "
            f"tied, {w['unscored']} unscored, {result['errors']} failed); length-controlled "
            f"{_show(result['length_controlled_win_rate'])}{answers}")


def register(root: typer.Typer) -> None:
    root.command("eval")(eval_)
