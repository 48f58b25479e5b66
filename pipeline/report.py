"""``<root>/report.md`` of ``rlaif run``: what the loop did, read back from the stages' metrics.json files.

Every number in the report is a value of some stage's ``metrics.json`` printed by ``fmt`` (floats
to 3 decimals, integers as they are), so a reader can trace each one to its file
(tests/test_pipeline.py::test_report_numbers_come_from_the_metrics_files). Figures: the judge's
label distribution (drawn here from the judge's metrics.json) and links to the plots the stages
drew themselves (training curves, eval's win-rate per principle and length plots).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from plumbing.atomic import write_bytes

REPORT, LABELS_PNG = "report.md", "judge_labels.png"


def fmt(x: Any) -> str:
    """How the report prints a number (the test formats metrics.json's values the same way)."""
    if x is None:
        return "n/a"
    if isinstance(x, bool) or isinstance(x, int):
        return str(int(x))
    return f"{x:.3f}"


def read_metrics(recipe) -> dict[str, dict]:
    out = {}
    for stage in recipe.stages:
        path = recipe.path(stage) / "metrics.json"
        if path.is_file():
            out[stage] = json.loads(path.read_text())
    return out


def _interval(w: dict | None) -> str:
    if not w or w.get("value") is None:
        return "n/a"
    if w.get("lo") is None:
        return fmt(w["value"])
    return f"{fmt(w['value'])} [{fmt(w['lo'])}, {fmt(w['hi'])}]"


def _counts_table(m: dict[str, dict]) -> list[str]:
    lines = ["| stage | rows / steps | details |", "| --- | --- | --- |"]
    for stage, x in m.items():
        if "global_step" in x:
            lines.append(f"| {stage} | {fmt(x['global_step'])} steps | world size {fmt(x.get('world_size'))} |")
        elif stage == "eval":
            lines.append(f"| eval | {fmt(x.get('n_prompts'))} prompts | identical responses "
                         f"{fmt(x.get('identical_responses'))} |")
        elif "rows" in x:
            parts = [f"{k} {fmt(v)}" for k, v in sorted(x.get("counts", {}).items()) if isinstance(v, int)]
            if "responses" in x:
                parts.append(f"responses {fmt(x['responses'])}")
            lines.append(f"| {stage} | {fmt(x['rows'])} rows | {', '.join(parts)} |")
    return lines


def _judge_section(j: dict, figures: dict[str, bytes]) -> list[str]:
    hist = j["p_chosen_histogram"]
    lines = ["## The judge's labels", "",
             f"p_chosen mean {fmt(j.get('p_chosen_mean'))}; position-consistent rows "
             f"{fmt(j.get('position_consistent_rows'))} of {fmt(j.get('rows_with_both_orders'))} "
             f"({fmt(j.get('position_consistency'))}).", "",
             "| p_chosen from | to | rows |", "| --- | --- | --- |"]
    bins = hist["bins"]
    lines += [f"| {fmt(bins[i])} | {fmt(bins[i + 1])} | {fmt(c)} |" for i, c in enumerate(hist["counts"])]
    png = _plot_labels(hist)
    if png is not None:
        figures[LABELS_PNG] = png
        lines += ["", f"![label distribution]({LABELS_PNG})"]
    used = j.get("principles_used") or {}
    if used:
        lines += ["", "Principles drawn: " + ", ".join(f"`{k}` {fmt(v)}" for k, v in sorted(used.items())) + "."]
    return lines


def _examples(j: dict) -> list[str]:
    lines = ["## Example preference rows", ""]
    for e in j.get("examples", []):
        quoted = [f"> **{k}:** {' '.join(str(e[k]).split())[:400]}" for k in ("prompt", "chosen", "rejected")]
        lines += [f"p_chosen {fmt(e['p_chosen'])}", "", quoted[0], ">", quoted[1], ">", quoted[2], ""]
    return lines


def _training(m: dict[str, dict], root: Path) -> list[str]:
    lines = ["## Training", ""]
    for stage, x in m.items():
        if "global_step" not in x:
            continue
        train = x.get("train") or {}
        loss = train.get("train_loss")
        lines.append(f"- **{stage}**: {fmt(x['global_step'])} steps, mean training loss {fmt(loss)}")
        if (root / stage / "training_curve.png").is_file():
            lines += ["", f"![{stage} curve]({stage}/training_curve.png)", ""]
    return lines


def _eval_section(e: dict, root: Path) -> list[str]:
    lc = e.get("length_controlled_win_rate") or {}
    length = e.get("length") or {}
    corr = length.get("correlation") or {}
    lines = ["## The trained model against the start model", "",
             "Win-rate under the constitution judge (both orders, soft votes) with its bootstrap interval over "
             "prompts (eval/report.md says how it is computed):", "",
             "| measure | value |", "| --- | --- |",
             f"| win-rate | {_interval(e.get('win_rate'))} |",
             f"| length-controlled win-rate | {_interval(lc)} |",
             f"| position consistency | {_interval(e.get('position_consistency'))} |",
             f"| verdict vs length difference ({length.get('unit', 'characters')}), Pearson | {fmt(corr.get('pearson'))} |",
             f"| verdict vs length difference, Spearman | {fmt(corr.get('spearman'))} |",
             "", "| principle | win-rate |", "| --- | --- |"]
    lines += [f"| `{pid}` | {_interval(w)} |" for pid, w in sorted((e.get("per_principle") or {}).items())]
    for png in sorted((root / "eval").glob("*.png")):
        lines += ["", f"![{png.stem}](eval/{png.name})"]
    return lines


def render(recipe, m: dict[str, dict], figures: dict[str, bytes]) -> str:
    """The report's text; the figures it links are added to ``figures`` (name -> PNG bytes)."""
    root = Path(recipe.root)
    lines = [f"# {recipe.name}", ""]
    const = (m.get("judge") or {}).get("constitution") or {}
    if const:
        lines += [f"Constitution `{const.get('name')}` version `{const.get('version')}`, sha256 `{const.get('sha256')}`.", ""]
    lines += [f"Start model `{recipe.model}`; stages: {', '.join(recipe.stages)}.", "", "## Data per stage", "",
              *_counts_table(m), ""]
    if "judge" in m:
        lines += [*_judge_section(m["judge"], figures), ""]
    if any("global_step" in x for x in m.values()):
        lines += [*_training(m, root), ""]
    if "eval" in m:
        lines += [*_eval_section(m["eval"], root), ""]
    if "judge" in m:
        lines += _examples(m["judge"])
    return "\n".join(lines).rstrip() + "\n"


def report_files(recipe) -> dict[str, bytes]:
    """The files the report writes into the root: report.md and, when the judge labelled pairs, its figure."""
    figures: dict[str, bytes] = {}
    text = render(recipe, read_metrics(recipe), figures)
    return {REPORT: text.encode("utf-8"), **figures}


def write_report(recipe) -> Path:
    root = Path(recipe.root)
    for name, data in report_files(recipe).items():
        write_bytes(root / name, data)
    return root / REPORT


def _plot_labels(hist: dict) -> bytes | None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not sum(hist["counts"]):
        return None
    bins = hist["bins"]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar([(a + b) / 2 for a, b in zip(bins, bins[1:], strict=False)], hist["counts"], width=0.09)
    ax.set_xlabel("p_chosen (judge's probability for the chosen response)")
    ax.set_ylabel("rows")
    ax.set_xlim(0, 1)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
    return out.getvalue()
