"""The stages of ``rlaif run`` (pipeline/loop.py): each builds its command's own config from the
pipeline recipe and calls the function the command calls, then writes the stage's ``metrics.json``
(the align and eval stages write theirs themselves; generate, revise and judge get one here, from
their run directories) so that every number of the report has one source.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from plumbing.atomic import write_text

LABEL_BINS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
EXAMPLES = 3  # preference rows quoted in the judge's metrics.json and the report


def _const_path(recipe) -> str:
    from constitution import path_or_default

    return str(path_or_default(recipe.constitution))


def _engine(recipe, model: str | None = None) -> dict[str, Any]:
    """EngineOptions' fields (plain data: the model may be one a later stage writes)."""
    return {"model": model or recipe.model, **recipe.engine.model_dump()}


def policy_start(recipe) -> str:
    """The model the trained stage starts from: the SFT output when the loop has one."""
    return str(recipe.path("sft")) if "sft" in recipe.stages else recipe.model


def final_policy(recipe) -> str:
    """The model eval compares with the start model: the trained stage's output, else the SFT output."""
    trained = [s for s in ("dpo", "ppo", "grpo") if s in recipe.stages]
    return str(recipe.path(trained[0])) if trained else str(recipe.path("sft"))


def stage_inputs(recipe, stage: str) -> dict[str, Any]:
    """The options of one stage, as its command's config takes them (plain data: also what is fingerprinted)."""
    root = {"out": str(recipe.path(stage))}
    if stage in ("generate", "revise"):
        extra = {"constitution": _const_path(recipe)} if stage == "revise" else {}
        return {"prompts": str(recipe.prompts_file()), **root, "engine": _engine(recipe),
                **extra, **getattr(recipe, stage)}
    if stage == "judge":
        return {"input": str(recipe.path("generate")), **root, "constitution": _const_path(recipe),
                "model": recipe.model, **recipe.judge}
    if stage in ("sft", "reward", "dpo", "ppo", "grpo"):
        data = {"sft": recipe.path("revise"), "reward": recipe.path("judge"), "dpo": recipe.path("judge"),
                "ppo": recipe.prompts_file()}.get(stage)
        raw = {"model": recipe.model if stage in ("sft", "reward") else policy_start(recipe), "output_dir": str(recipe.path(stage)),
               "quiet": True, **({"data": str(data)} if data else {}), **getattr(recipe, stage)}
        if stage == "ppo":
            raw.setdefault("reward_model", str(recipe.path("reward")))
        if stage == "grpo" and "judge" in raw.get("reward_funcs", []):  # the loop's constitution, unless it names one
            raw["judge"] = {"constitution": _const_path(recipe), **(raw.get("judge") or {})}
        return raw
    if stage == "eval":
        judge = {"constitution": _const_path(recipe), "model": recipe.model, **recipe.judge}
        return {"prompts": str(recipe.prompts_file()), **root, "policy": _engine(recipe, final_policy(recipe)),
                "reference": _engine(recipe), "judge": judge, **recipe.eval}
    if stage == "publish":  # dry-run unless the recipe says dry_run: false
        opts = dict(recipe.publish)
        dry = opts.pop("dry_run", True)
        return {"run_dir": str(recipe.path("judge")), "dry_run": str(recipe.path("publish")) if dry else None,
                "constitution": _const_path(recipe), **opts}
    raise KeyError(stage)


def build(recipe, stage: str, checking: bool = False):
    """The stage's config object. ``checking``: before the loop runs, models that earlier stages will
    write are not there yet, so they are checked as the start model (the keys are what is checked)."""
    raw = stage_inputs(recipe, stage)
    if stage == "generate":
        from generator.generate import GenerateConfig

        return GenerateConfig.model_validate(raw)
    if stage == "revise":
        from generator.revise import ReviseConfig

        return ReviseConfig.model_validate(raw)
    if stage == "judge":
        from judge.config import JudgeConfig

        return JudgeConfig.model_validate(raw)
    if stage in ("sft", "reward", "dpo", "ppo", "grpo"):
        from align.config import build_recipe

        if checking:
            raw = {**raw, "model": recipe.model}
        return build_recipe(stage, raw, source=f"stage {stage}")
    if stage == "eval":
        from evaluation.evaluate import EvalConfig

        if checking:
            raw = {**raw, "policy": {**raw["policy"], "model": recipe.model}}
        return EvalConfig.model_validate(raw)
    if stage == "publish":
        from publish.upload import PublishConfig, validate_repo_id

        config = PublishConfig.model_validate({"repo_id": "rlaif/preview", **raw})
        validate_repo_id(config.repo_id)
        return config
    raise KeyError(stage)


def build_all(recipe) -> dict[str, dict]:
    """Every listed stage's options, each checked by building its config; a bad key fails here in one line."""
    from pydantic import ValidationError

    from pipeline.root import PipelineError

    out = {}
    for stage in recipe.stages:
        try:
            build(recipe, stage, checking=True)
        except ValidationError as e:
            first = e.errors()[0]
            loc = ".".join(str(p) for p in first.get("loc", ()))
            msg = first.get("msg", "invalid").removeprefix("Value error, ")
            raise PipelineError(f"stage {stage}: {loc + ': ' if loc else ''}{msg}") from None
        except ValueError as e:
            line = " ".join(str(e).split())
            raise PipelineError(line if line.startswith(f"stage {stage}") else f"stage {stage}: {line}") from None
        out[stage] = json.loads(json.dumps(stage_inputs(recipe, stage), default=str))
    return out


# --- reading the inputs before anything is written -----------------------------------------------------------

TRAINING = ("sft", "reward", "dpo", "ppo", "grpo")
HUB_TIMEOUT_S = 10.0  # one whoami request; a Hub that has not answered by then is not one to train for


def check_inputs(recipe, stages: list[str]) -> None:
    """Read every input of ``stages`` that the loop does not make itself, the way the stage will read it, so a
    bad one is refused (one line) before the root or any stage folder exists: prompt files, a training stage's
    own data, the constitution and template folders. What comes from the root's stage folders is checked by the
    stage reading it."""
    from pipeline.root import PipelineError

    for stage in stages:
        try:
            _read_inputs(recipe, stage)
        except (ValueError, OSError) as e:
            line = " ".join(str(e).split())
            raise PipelineError(line if line.startswith(f"stage {stage}") else f"stage {stage}: {line}") from None


def _read_inputs(recipe, stage: str) -> None:
    from constitution import load_constitution, path_or_default

    config = build(recipe, stage, checking=True)
    if stage in ("generate", "revise"):
        from generator.generate import read_items

        read_items(config)
    if stage == "revise":
        from generator.revise import TEMPLATES

        load_constitution(config.constitution)
        _read_templates(TEMPLATES, config.templates)
    if stage in ("judge", "eval"):
        from judge.scoring import templates_used

        judge = config if stage == "judge" else config.judge
        load_constitution(path_or_default(judge.constitution))
        _read_templates(templates_used(judge), judge.templates)
    if stage == "eval":
        from evaluation.inputs import read_input

        read_input(config)
    if stage == "publish":
        load_constitution(path_or_default(config.constitution))
    root = Path(recipe.root).resolve()
    if stage in TRAINING and not Path(config.data.path).resolve().is_relative_to(root):
        if stage == "ppo":  # its reward model is the loop's reward stage: checked when PPO starts
            from align.ppo.data import load_prompts

            load_prompts(config)
        else:
            config.check_data()


def _read_templates(names, folder) -> None:
    """Each template as the stage will read it (a user's folder shadows the built-ins), named when it is not text."""
    from prompts import template_source

    for name in names:
        try:
            template_source(name, folder)
        except UnicodeDecodeError:
            raise ValueError(f"templates {folder}: {name} is not UTF-8 text; save it as UTF-8") from None


def check_hub(recipe) -> None:
    """A publish stage that uploads (``publish.dry_run: false``) needs a token and a Hub that answers; both are
    checked with one whoami request (``HUB_TIMEOUT_S``) before the loop runs, so neither fails only after the
    training. The token goes only into that request's Authorization header."""
    from huggingface_hub import constants, get_token
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    from pipeline.root import PipelineError
    from publish.upload import _first_line, _unreachable  # the upload's own reading of a Hub error

    if build(recipe, "publish").dry_run is not None:
        return
    where, fallback = f"the Hub at {constants.ENDPOINT}", "or set publish.dry_run: true to write the files only"
    token = get_token()
    if not token:
        raise PipelineError(f"stage publish: no Hugging Face token: set HF_TOKEN or run `hf auth login`, {fallback}")
    try:
        reply = get_session().get(f"{constants.ENDPOINT}/api/whoami-v2", headers=build_hf_headers(token=token),
                                  timeout=HUB_TIMEOUT_S)
        hf_raise_for_status(reply)
    except OfflineModeIsEnabled:
        raise PipelineError(f"stage publish: {where} is unreachable in offline mode (HF_HUB_OFFLINE=1); unset it, "
                            f"{fallback}") from None
    except HfHubHTTPError as e:  # the Hub answered (an OSError too, so caught before the network errors)
        status = e.response.status_code if e.response is not None else None
        if status == 429:  # whoami's strict rate limit: the Hub is there, and the upload will check the token
            return
        why = "refused the token (401): set a valid HF_TOKEN or run `hf auth login --force`" if status == 401 \
            else f"answered {status}: {_first_line(e)}"
        raise PipelineError(f"stage publish: {where} {why}") from None
    except _unreachable() as e:
        raise PipelineError(f"stage publish: could not reach {where} ({_first_line(e)}); check the network, or "
                            f"HF_ENDPOINT if it is set, {fallback}") from None
    try:
        role = ((reply.json().get("auth") or {}).get("accessToken") or {}).get("role")
    except (ValueError, AttributeError):  # not the Hub's JSON: nothing more to learn from it
        role = None
    if role == "read":
        raise PipelineError("stage publish: the Hugging Face token is read-only; publishing needs a token with "
                            "write access (or a fine-grained one that may write the repository)")


# --- running one stage ---------------------------------------------------------------------------------------

def run_stage(stage: str, recipe, pool, overwrite: bool) -> str:
    """Run ``stage`` (resuming its run directory unless ``overwrite``); returns one line for the console."""
    config = build(recipe, stage)
    if stage in ("generate", "revise"):
        from generator.generate import run_generate
        from generator.revise import run_revise

        config = config.model_copy(update={"overwrite": overwrite})
        engine = pool.get(config.engine, seed=config.seed)
        counts = (run_generate if stage == "generate" else run_revise)(config, engine=engine)
        metrics = data_metrics(stage, config.out)
        _write_metrics(config.out, metrics)
        return f"{counts.get('train', 0)} rows -> {config.out}"
    if stage == "judge":
        from judge.build import engine_options, run_judge

        config = config.model_copy(update={"overwrite": overwrite})
        summary = run_judge(config, engine=pool.get(engine_options(config), seed=config.seed))
        _write_metrics(config.out, judge_metrics(config.out))
        return summary.line()
    if stage in ("sft", "reward", "dpo", "ppo", "grpo"):
        from align import run

        pool.close()  # training takes the cores (and a GPU's memory) the engines held
        # TRL prints each step's log dict with print(): to descriptor 1, which `rlaif run` sends to the run's
        # log file (plumbing/capture.py), not to the console that shows the stages' lines
        with contextlib.redirect_stdout(sys.__stdout__):
            metrics = run(config, overwrite=True)  # an align output is replaced only by one of its own method
        return f"{metrics['global_step']} steps -> {config.output_dir}"
    if stage == "eval":
        from evaluation.evaluate import evaluate

        config = config.model_copy(update={"overwrite": overwrite})
        result = evaluate(config)
        value = (result.get("win_rate") or {}).get("value")
        return f"win-rate {'n/a' if value is None else f'{value:.3f}'} -> {config.out}"
    if stage == "publish":  # its dry run's folder was emptied by the loop (pipeline/root.py CLEARED)
        from publish.upload import run_publish

        return f"published: {run_publish(config)}"
    raise KeyError(stage)


def _write_metrics(folder: str | Path, metrics: dict) -> None:
    write_text(Path(folder) / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def data_metrics(stage: str, folder: str | Path) -> dict:
    """Counts of a generate or revise run, from its manifest and rows."""
    from plumbing.runs import load, read_manifest

    manifest = read_manifest(folder)
    rows = load(folder)
    out = {"stage": stage, "counts": manifest.get("counts", {}), "rows": rows.num_rows,
           "model": manifest.get("spec", {}).get("model")}
    if stage == "generate" and rows.num_rows:
        out["responses"] = sum(len(r) for r in rows["responses"])
    if stage == "revise" and rows.num_rows:
        changed = sum(r["revisions"][-1].strip() != r["init_response"].strip() for r in rows if r["revisions"])
        out["revised_differs_share"] = round(changed / rows.num_rows, 4)
    return out


def judge_metrics(folder: str | Path) -> dict:
    """The judge's label distribution (p_chosen histogram), position consistency and a few example rows."""
    from plumbing.runs import load, read_manifest

    manifest = read_manifest(folder)
    rows = load(folder)
    p = [x for x in rows["p_chosen"] if x is not None] if rows.num_rows else []
    consistent = [x for x in rows["position_consistent"] if x is not None] if rows.num_rows else []
    hist = [0] * (len(LABEL_BINS) - 1)
    for x in p:
        hist[min(int(x * 10), 9)] += 1
    examples = [{"prompt": r["prompt"][-1]["content"], "chosen": r["chosen"][0]["content"],
                 "rejected": r["rejected"][0]["content"], "p_chosen": round(r["p_chosen"], 3)}
                for r in rows.select(range(min(EXAMPLES, rows.num_rows)))]
    from collections import Counter

    from constitution import load_constitution

    const_file = ((manifest.get("runtimes") or [{}])[-1]).get("constitution")
    const = load_constitution(const_file) if const_file and Path(const_file).is_file() else None
    used = Counter(pid for ids in (rows["principle_ids"] if rows.num_rows else []) for pid in ids)
    return {"stage": "judge", "counts": manifest.get("counts", {}), "rows": rows.num_rows,
            "constitution": {"name": const.name, "version": const.version, "sha256": const.sha256()} if const else None,
            "principles_used": dict(sorted(used.items())),
            "model": manifest.get("spec", {}).get("model"),
            "p_chosen_mean": round(sum(p) / len(p), 4) if p else None,
            "p_chosen_histogram": {"bins": list(LABEL_BINS), "counts": hist},
            "position_consistency": round(sum(consistent) / len(consistent), 4) if consistent else None,
            "position_consistent_rows": sum(consistent), "rows_with_both_orders": len(consistent),
            "examples": examples}
