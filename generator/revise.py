"""``rlaif revise``: the SL-CAI critique -> revision loop of Constitutional AI (arXiv 2212.08073, sec. 3).

For each prompt: an initial response, then R rounds; each round samples one principle by
weight (seeded per item and round), asks for a critique of the current response against the
principle's critique text, then for a revision following its revision text. The
constitution's few-shot chats are prepended to every critique/revision conversation, as in
the paper. Each round sees only the latest response (not the whole history of earlier
rounds), which keeps prompts within a small model's context; the paper's results are
reported per revision step, so nothing is lost.

The SFT record keeps everything (names as in HuggingFaceH4/cai-conversation-harmless):
``messages`` = prompt + final revision, ``init_response``, ``critiques``, ``revisions``,
``principle_ids``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field

import prompts
from constitution import Constitution, load_constitution
from generator.engines import Engine, Sampling
from generator.generate import GenerateConfig, base_spec, read_items, run_batches, split_too_long
from generator.records import REVISIONS
from plumbing.inputs import PromptItem
from plumbing.runs import RunWriter

TEMPLATES = (prompts.CRITIQUE, prompts.REVISION)


class ReviseConfig(GenerateConfig):
    """SL-CAI run; ``n`` is fixed at 1 (one trajectory per prompt)."""

    constitution: Path = Field(description="Constitution YAML file.")
    rounds: int = Field(1, ge=1, le=16, description="Critique -> revision rounds per prompt.")
    n: int = Field(1, ge=1, le=1, description="One trajectory per prompt.")
    templates: Path | None = Field(None, description="Folder whose critique/revision .jinja shadow the built-ins.")


@dataclass
class Trajectory:
    item: PromptItem
    current: str = ""
    init_response: str = ""
    critiques: list[str] = field(default_factory=list)
    revisions: list[str] = field(default_factory=list)
    principle_ids: list[str] = field(default_factory=list)
    error: str | None = None


def _round(engine: Engine, const: Constitution, trajs: list[Trajectory], r: int, config: ReviseConfig,
           sampling: Sampling) -> None:
    """One critique + revision step for every live trajectory of a batch (two engine calls)."""
    live = [t for t in trajs if t.error is None]
    shots = const.few_shot_chat()
    convs = {}
    for t in live:
        principle = const.sample_principles(1, config.seed, key=f"{t.item.id}:{r}")[0]
        ctx = {"prompt": t.item.messages[-1]["content"], "conversation": t.item.messages}
        request = prompts.render(prompts.CRITIQUE, config.templates,
                                 critique_request=const.render(principle, "critique", **ctx))
        t.principle_ids.append(principle.id)
        convs[id(t)] = (principle, ctx, shots + t.item.messages + [
            {"role": "assistant", "content": t.current}, {"role": "user", "content": request}])
    for step in ("critique", "revision"):
        live = _drop_too_long(engine, [t for t in live if t.error is None], convs, sampling.max_tokens)
        outs = engine.generate([convs[id(t)][2] for t in live], sampling) if live else []
        for t, completions in zip(live, outs, strict=True):
            text = completions[0].text.strip()
            principle, ctx, conv = convs[id(t)]
            if step == "critique":
                t.critiques.append(text)
                request = prompts.render(prompts.REVISION, config.templates,
                                         revision_request=const.render(principle, "revision", **ctx))
                convs[id(t)] = (principle, ctx, conv + [{"role": "assistant", "content": text},
                                                        {"role": "user", "content": request}])
            else:
                t.revisions.append(text)
                if text:
                    t.current = text
                else:
                    t.error = f"round {r + 1}: the model returned an empty revision"


def _drop_too_long(engine: Engine, trajs: list[Trajectory], convs: dict, max_tokens: int) -> list[Trajectory]:
    probes = [PromptItem(t.item.id, convs[id(t)][2], t.item.index) for t in trajs]
    fits, bad = split_too_long(engine, probes, max_tokens)
    reasons = {b.id: b.reason for b in bad}
    for t in trajs:
        if t.item.id in reasons:
            t.error = f"critique/revision conversation: {reasons[t.item.id]}"
    return [t for t in trajs if t.error is None]


def run_revise(config: ReviseConfig, engine: Engine | None = None,
               progress: Callable[[int, int], None] | None = None) -> dict:
    items = read_items(config)
    const = load_constitution(config.constitution)
    sampling = config.sampling()
    spec, runtime = base_spec(config, sampling, engine)
    spec.update(rounds=config.rounds, constitution_sha256=const.sha256(),
                template_sha256=prompts.template_sha256(TEMPLATES, config.templates))
    runtime["constitution_path"] = str(config.constitution)
    writer = RunWriter(config.out, "revise", spec, REVISIONS, runtime=runtime, overwrite=config.overwrite)
    return run_batches(config, writer, items, engine, progress,
                       lambda engine, batch: _revise_batch(engine, const, batch, config, sampling, spec, writer))


def _revise_batch(engine, const, batch, config, sampling, spec, writer) -> None:
    fits, too_long = split_too_long(engine, batch, sampling.max_tokens)
    for bad in too_long:
        writer.error(bad.id, bad.reason, index=bad.index)
    trajs = [Trajectory(item) for item in fits]
    outs = engine.generate([t.item.messages for t in trajs], sampling) if trajs else []
    for t, completions in zip(trajs, outs, strict=True):
        t.init_response = t.current = completions[0].text.strip()
    for r in range(config.rounds):
        _round(engine, const, trajs, r, config, sampling)
    rows = []
    for t in trajs:
        if t.error:
            writer.error(t.item.id, t.error, index=t.item.index)
            continue
        rows.append({
            "id": t.item.id, "prompt": t.item.messages,
            "messages": t.item.messages + [{"role": "assistant", "content": t.current}],
            "init_response": t.init_response, "critiques": t.critiques, "revisions": t.revisions,
            "principle_ids": t.principle_ids, "model": spec["model"],
            "constitution_sha256": spec["constitution_sha256"], "template_sha256": spec["template_sha256"],
        })
    writer.write(rows)
