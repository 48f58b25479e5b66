"""The dataset card of a published judge run: ``README.md`` = YAML front matter (license, tags, the
configs and their data files, as the Hub reads them) + a body rendered from ``publish/card.md.jinja``
through the project's one sandboxed renderer (``prompts.render_text``).

The body states how the labels were made (judge model, constitution, template and spec hashes),
label statistics per part, a judge-eval table with its figures when one is given, and the
constitution file itself, fenced so that its text cannot close the fence.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from judge.errors import JudgeError

if TYPE_CHECKING:
    from judge.parts import Part
    from publish.config import PublishConfig

CARD_TEMPLATE = Path(__file__).with_name("card.md.jinja")
EVAL_DIR = "judge-eval"  # where a judge-eval's figures go, in the run and in the repository
TAGS = ["rlaif", "constitutional-ai", "synthetic", "preference", "dpo"]
# Hub size buckets (huggingface_hub DatasetCardData.size_categories), upper bounds exclusive.
SIZE_CATEGORIES = [(10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"), (10**6, "100K<n<1M"),
                   (10**7, "1M<n<10M"), (10**8, "10M<n<100M"), (10**9, "100M<n<1B"), (10**10, "1B<n<10B"),
                   (10**11, "10B<n<100B"), (10**12, "100B<n<1T")]


def size_category(n: int) -> str:
    return next((label for bound, label in SIZE_CATEGORIES if n < bound), "n>1T")


def front_matter(config: PublishConfig, parts: list[Part]) -> str:
    import yaml

    configs: dict[str, list] = {}
    for p in parts:
        configs.setdefault(p.config, []).append({"split": p.split, "path": f"{p.data_dir}/{p.split}-*"})
    meta = {
        "license": config.license,
        "pretty_name": config.repo_id.split("/")[-1],
        "tags": TAGS,
        "task_categories": ["text-generation", "reinforcement-learning"],
        "annotations_creators": ["machine-generated"],
        "size_categories": [size_category(sum(len(p.rows) for p in parts))],
        "configs": [{"config_name": name, **({"default": True} if name == "default" else {}), "data_files": files}
                    for name, files in configs.items()],
    }
    return yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)


def _rate(k: int, n: int) -> str:
    return f"{k}/{n} ({100.0 * k / n:.1f}%)" if n else "n/a"


def label_stats(parts: list[Part]) -> dict:
    """Per part and overall: rows, mean p_chosen, position consistency; p_chosen histogram."""
    split_stats, all_p, all_c = [], [], []
    for p in parts:
        ps = p.rows["p_chosen"]
        cs = [c for c in p.rows["position_consistent"] if c is not None]
        all_p += ps
        all_c += cs
        split_stats.append({"config": p.config, "split": p.split, "rows": len(ps),
                            "mean_p": f"{sum(ps) / len(ps):.3f}", "consistency": _rate(sum(cs), len(cs))})
    edges = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    histogram = [{"label": f"[{lo:.1f}, {hi:.1f}{']' if hi == 1.0 else ')'}",
                  "count": sum(lo <= x < hi or (hi == 1.0 and x == 1.0) for x in all_p)}
                 for lo, hi in zip(edges, edges[1:], strict=False)]
    below = sum(x < 0.5 for x in all_p)  # p_chosen >= 0.5 by construction; shown if ever violated
    if below:
        histogram.insert(0, {"label": "< 0.5", "count": below})
    return {"split_stats": split_stats, "histogram": histogram, "total_rows": len(all_p),
            "mean_p_all": f"{sum(all_p) / len(all_p):.3f}", "consistency_all": _rate(sum(all_c), len(all_c))}


def find_evaluation(config: PublishConfig) -> Path | None:
    if config.eval_dir is not None:
        if not (config.eval_dir / "metrics.json").is_file():
            raise JudgeError(f"--eval {config.eval_dir}: no metrics.json; give the --out folder of `rlaif judge-eval`")
        return config.eval_dir
    default = config.run_dir / EVAL_DIR
    return default if (default / "metrics.json").is_file() else None


def evaluation_section(eval_dir: Path, manifest: dict, folder: Path) -> dict:
    """The card's judge-eval table; its metrics.json and plots are copied under ``judge-eval/``."""
    from judge.eval_report import METRICS, PRINCIPLES_PNG, RELIABILITY_PNG, headline_rows

    try:
        m = json.loads((eval_dir / METRICS).read_text())
        s = m["settings"]
        rows = headline_rows(m)
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise JudgeError(f"{eval_dir / METRICS}: not a judge-eval metrics file ({e!r})") from None
    spec = manifest.get("spec", {})
    mismatch = [f"evaluated with {what} {got}, the data was labelled with {want}"
                for what, got, want in (("model", s.get("model"), spec.get("model")),
                                        ("constitution", s.get("constitution_sha256"), spec.get("constitution_sha256")))
                if got != want]
    (folder / EVAL_DIR).mkdir(exist_ok=True)
    shutil.copyfile(eval_dir / METRICS, folder / EVAL_DIR / METRICS)
    images = []
    for name in (RELIABILITY_PNG, PRINCIPLES_PNG):
        if (eval_dir / name).is_file():
            shutil.copyfile(eval_dir / name, folder / EVAL_DIR / name)
            images.append(f"{EVAL_DIR}/{name}")
    return {"n_pairs": m["n_pairs"], "human_file": Path(s.get("human_file", "?")).name, "model": s.get("model"),
            "constitution_sha256": s.get("constitution_sha256"), "mismatch": "; ".join(mismatch),
            "rows": rows, "images": images}


def _fence(text: str) -> str:
    """A code fence longer than any backtick run in ``text``, so the embedded file cannot close it."""
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def card_context(config: PublishConfig, manifest: dict, parts: list[Part], constitution_path: Path, constitution,
                 eval_dir: Path | None, folder: Path) -> dict:
    """Everything ``publish/card.md.jinja`` reads; a judge-eval's files are copied into ``folder``."""
    import yaml

    from plumbing.runs import read_errors

    text = constitution_path.read_text(encoding="utf-8")
    text = text if text.endswith("\n") else text + "\n"
    errors = read_errors(config.run_dir)
    unlabelled = sum(e.get("kind") == "unlabelled" for e in errors)
    spec = manifest.get("spec", {})
    first = parts[0].rows[0]
    return {
        "front_matter": front_matter(config, parts), "pretty_name": config.repo_id.split("/")[-1],
        "repo_id": config.repo_id, "test_size": config.test_size, "seed": config.seed,
        "extra_configs": [{"name": p.config, "description": f"the run's {p.config!r} split"}
                          for p in parts if p.config != "default"],
        "filter": manifest.get("filter"), "unlabelled": unlabelled, "bad_input": len(errors) - unlabelled,
        **label_stats(parts),
        "evaluation": evaluation_section(eval_dir, manifest, folder) if eval_dir else None,
        "judge_model": first["judge_model"], "constitution_name": constitution.name,
        "constitution_version": constitution.version, "constitution_sha256": constitution.sha256(),
        "template_sha256": first["template_sha256"], "spec_sha256": manifest.get("spec_sha256"),
        "input_kind": spec.get("input", {}).get("kind", "?"), "input_sha256": spec.get("input", {}).get("sha256", "?"),
        "spec_yaml": yaml.safe_dump(spec, sort_keys=False, allow_unicode=True),
        "versions": ", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items()),
        "fence": _fence(text), "constitution_text": text,
    }


def render_card(context: dict) -> str:
    """README.md from ``publish/card.md.jinja`` in the project's one sandbox (``prompts.render_text``:
    no access to Python objects, files or the network). That renderer drops a template's final
    newline (prompts do not end in one); a file does, so it is put back."""
    from prompts import render_text

    text = render_text(CARD_TEMPLATE.read_text(encoding="utf-8"), **context)
    return text if text.endswith("\n") else text + "\n"
