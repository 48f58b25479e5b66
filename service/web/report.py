"""A job's report.md as HTML for its page, and the A/B result shown by the playground and the job page.

Markdown is rendered by markdown-it-py in CommonMark mode with raw HTML off: a ``<script>`` or an ``<img
onerror=...>`` written into a report (a model's reply quoted in an example row) comes out as text, and
markdown-it's link check drops ``javascript:``, ``vbscript:``, ``file:`` and ``data:`` URLs (``validateLink``).
A relative image or link (``judge_labels.png``) points at the job's file endpoint, so the plots show.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlsplit

from markupsafe import Markup

from service.core import API

REPORT = "report.md"
MAX_REPORT = 2 << 20  # bytes of a report.md rendered; a longer one is cut (the file link has it whole)


def _markdown():
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def file_url(job_id: str, relative: str) -> str:
    return f"{API}/jobs/{job_id}/files/{quote(relative)}"


def _local(url: str) -> bool:
    parts = urlsplit(url)
    return not (parts.scheme or parts.netloc or url.startswith(("/", "#")))


def render_markdown(text: str, job_id: str, folder: str) -> Markup:
    """``text`` (markdown of the job's ``folder``, relative to its run folder) as HTML whose relative URLs point
    at the job's files. The output is markdown-it's, raw HTML escaped (module docstring); nothing of the input
    passes unescaped."""
    md = _markdown()
    tokens = md.parse(text)
    stack = list(tokens)
    while stack:
        token = stack.pop()
        stack.extend(token.children or [])
        attr = "src" if token.type == "image" else "href" if token.type == "link_open" else None
        if attr and _local(str(token.attrGet(attr) or "")):
            target = (PurePosixPath(folder) / str(token.attrGet(attr))).as_posix()
            token.attrSet(attr, file_url(job_id, target))
    return Markup(md.renderer.render(tokens, md.options, {}))  # markdown-it output, raw HTML escaped


def job_report(run_dir: Path, job_id: str, folder: str = "") -> Markup | None:
    """The job's ``<folder>/report.md`` rendered, or None when there is none yet."""
    path = run_dir / folder / REPORT
    if not path.is_file() or path.is_symlink():
        return None
    with open(path, "rb") as f:
        text = f.read(MAX_REPORT).decode("utf-8", "replace")
    return render_markdown(text, job_id, folder)


def _messages_text(conversation: list[dict]) -> list[dict]:
    return [{"role": str(m.get("role", "")), "content": str(m.get("content", ""))} for m in conversation]


def ab_result(run_dir: Path, max_flips: int = 200) -> dict | None:
    """An A/B job's metrics and its flipped pairs with both responses (read back from the labelled sample the
    job judged, by pair id), or None before the job wrote metrics.json."""
    from judge.ab_report import AGREEMENT_PNG, PAIRS_PNG
    from service.ab_job import STAGE

    path = run_dir / STAGE / "metrics.json"
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    settings = metrics.get("settings", {})
    texts = {}
    try:
        from judge.ab import read_labelled_pairs

        human, _ = read_labelled_pairs(Path(settings["human_file"]), settings.get("limit"))
        texts = {p.id: p for p in human.pairs}
    except Exception as e:  # noqa: BLE001 - the sample may be gone since; the page says so instead of the texts
        missing = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
    else:
        missing = None
    flips = []
    for f in metrics.get("flips", [])[:max_flips]:
        pair = texts.get(f["id"])
        flips.append({**f, "conversation": _messages_text(pair.conversation) if pair else [],
                      "labelled": pair.first if pair else None, "other": pair.second if pair else None})
    plots = [{"name": name, "url": file_url(run_dir.parent.name, f"{STAGE}/{name}")}
             for name in (AGREEMENT_PNG, PAIRS_PNG) if (run_dir / STAGE / name).is_file()]
    return {"metrics": metrics, "flips": flips, "n_flips": len(metrics.get("flips", [])), "texts_missing": missing,
            "settings": settings, "plots": plots}
