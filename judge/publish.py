"""``rlaif publish``: a judge run -> a Hugging Face Hub dataset with a dataset card.

One function, ``build_folder``, writes every file of the repository: parquet shards in the
layout ``Dataset.push_to_hub`` uses (``data/{split}-{i:05d}-of-{n:05d}.parquet`` for the default
config, ``<config>/train-...`` for the others), ``README.md`` (card: YAML front matter + body)
and ``constitution.yaml``. ``--dry-run OUTDIR`` is that folder; the real push builds the same
folder in a temp dir and uploads it with ``HfApi.create_repo`` + ``HfApi.upload_folder`` in one
commit. We do not call ``push_to_hub``: it writes its own README (``dataset_info``, merged
``configs``) that a dry run could only imitate, so the dry run would stop being the exact mirror
of what lands on the Hub. ``upload_folder(delete_patterns=...)`` removes data shards of an earlier
publish, which ``push_to_hub`` also does.

The test split is drawn by id hash (``sha256(f"{seed}:{id}") < test_size``), so it is stable
across re-publishing. The token comes from ``huggingface_hub.get_token()`` (``HF_TOKEN``, then the
login file) and is only ever handed to ``HfApi``: never logged, printed or written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from judge.errors import JudgeError
from plumbing import atomic

log = logging.getLogger(__name__)

CARD_TEMPLATE = Path(__file__).with_name("card.md.jinja")
CONSTITUTION_FILE = "constitution.yaml"
EVAL_DIR = "judge-eval"  # where a judge-eval's figures go, in the run and in the repository
TAGS = ["rlaif", "constitutional-ai", "synthetic", "preference", "dpo"]
# Hub size buckets (huggingface_hub DatasetCardData.size_categories), upper bounds exclusive.
SIZE_CATEGORIES = [(10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"), (10**6, "100K<n<1M"),
                   (10**7, "1M<n<10M"), (10**8, "10M<n<100M"), (10**9, "100M<n<1B"), (10**10, "1B<n<10B"),
                   (10**11, "10B<n<100B"), (10**12, "100B<n<1T")]


class PublishConfig(BaseModel):
    """Publishing one judge run to the Hub (or, with ``dry_run``, to a folder)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    run_dir: Path = Field(description="A judge run directory (manifest stage 'judge').")
    repo_id: str = Field(description="Hub dataset repository, ORG/NAME (checked with huggingface_hub's validator).")
    private: bool = Field(False, description="Create the repository as private.")
    dry_run: Path | None = Field(None, description="Write the files that would be uploaded here; contact nothing.")
    constitution: Path | None = Field(None, description="The constitution file the run was judged with (default: "
                                                        "the file the run records, else the built-in one); its "
                                                        "sha256 must match.")
    eval_dir: Path | None = Field(None, description="A judge-eval output folder to show in the card "
                                                    "(default: <run>/judge-eval when it exists).")
    test_size: float = Field(0.1, ge=0.0, lt=1.0, description="Share of train rows drawn (by id hash) into test.")
    license: str = Field("cc-by-4.0", pattern=r"^[a-z0-9][a-z0-9.\-]*$",
                         description="License id for the card (a Hub license id such as cc-by-4.0, apache-2.0).")
    seed: int = Field(0, description="Seed of the test split's id hash.")


@dataclass(frozen=True)
class Part:
    """One (config, split) of the repository: its rows and where its shards go."""

    config: str
    split: str
    data_dir: str
    rows: object  # datasets.Dataset


def validate_repo_id(repo_id: str) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id as _validate

    try:
        _validate(repo_id)
    except HFValidationError as e:
        raise JudgeError(f"--repo-id {repo_id!r} is not a valid Hub id: {' '.join(str(e).split())}") from None


def read_judge_run(run_dir: Path) -> dict:
    from plumbing.runs import read_manifest

    manifest = read_manifest(run_dir)
    if manifest.get("stage") != "judge":
        raise JudgeError(f"{run_dir} is a {manifest.get('stage')!r} run, not a judge run; "
                         f"publish the --out folder of `rlaif judge`")
    if manifest.get("status") != "complete":
        raise JudgeError(f"{run_dir}: the judge run is not complete (status {manifest.get('status')!r}); "
                         f"re-run `rlaif judge` on it to finish before publishing")
    return manifest


def recorded_constitution(manifest: dict) -> Path | None:
    """The constitution file a run names (``runtime`` or ``spec`` key ``constitution``), if still on disk."""
    for section in ("runtime", "spec"):
        path = (manifest.get(section) or {}).get("constitution")
        if isinstance(path, str) and Path(path).is_file():
            return Path(path)
    return None


def load_constitution_for(run_shas: set[str], path: Path | None):
    """(file, Constitution) of the constitution the rows were judged with, or refuse. ``path``
    defaults to the built-in constitution; either way its sha256 must be the run's."""
    from constitution import DEFAULT_PATH, load_constitution

    if len(run_shas) != 1:
        raise JudgeError(f"the run's rows carry {len(run_shas)} different constitution_sha256 values; "
                         f"publish a run judged with one constitution")
    want = next(iter(run_shas))
    source = path or DEFAULT_PATH
    const = load_constitution(source)
    if const.sha256() != want:
        hint = "pass the file it was judged with" if path else \
            "it was not judged with the built-in constitution; pass --constitution PATH of the file it used"
        raise JudgeError(f"{source}: constitution sha256 {const.sha256()[:12]}... does not match the run's "
                         f"constitution_sha256 {want[:12]}...; {hint}")
    return Path(source), const


def in_test(row_id: str, seed: int, test_size: float) -> bool:
    """Stable membership: the id's hash, not its position, decides (so re-publishing keeps splits)."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{row_id}".encode()).digest()[:8], "big")
    return h / 2**64 < test_size


def make_parts(run_dir: Path, test_size: float, seed: int) -> list[Part]:
    """train -> default config's train/test; every other split of the run -> its own config."""
    from plumbing.runs import load_all

    parts = []
    for split, ds in load_all(run_dir).items():
        if split == "train":
            mask = [in_test(i, seed, test_size) for i in ds["id"]]
            for name, keep in (("train", False), ("test", True)):
                sub = ds.select([k for k, m in enumerate(mask) if m == keep])
                if len(sub):  # an empty parquet shard has no schema that datasets can read back
                    parts.append(Part("default", name, "data", sub))
        elif len(ds):
            parts.append(Part(split, "train", split, ds))
    if not parts:
        raise JudgeError(f"{run_dir}: the judge run holds no rows; nothing to publish")
    return sorted(parts, key=lambda p: p.config != "default")  # the default config first, as the Hub lists it


def write_shards(part: Part, folder: Path) -> list[str]:
    """Parquet shards as ``push_to_hub`` names and sizes them (datasets.config.MAX_SHARD_SIZE)."""
    from datasets import config as ds_config
    from datasets.utils.py_utils import convert_file_size_to_int

    nbytes = part.rows._estimate_nbytes()
    num_shards = int(nbytes / convert_file_size_to_int(ds_config.MAX_SHARD_SIZE)) + 1
    (folder / part.data_dir).mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(num_shards):
        name = f"{part.data_dir}/{part.split}-{index:05d}-of-{num_shards:05d}.parquet"
        part.rows.shard(num_shards=num_shards, index=index, contiguous=True).to_parquet(str(folder / name))
        names.append(name)
    return names


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
    from judge.evaluate import METRICS, PRINCIPLES_PNG, RELIABILITY_PNG, headline_rows

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


def render_card(context: dict) -> str:
    """README.md from ``judge/card.md.jinja``, rendered in the sandbox (no access to Python objects)."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, trim_blocks=True,
                                        lstrip_blocks=True, keep_trailing_newline=True)
    return env.from_string(CARD_TEMPLATE.read_text(encoding="utf-8")).render(**context)


def build_folder(config: PublishConfig, manifest: dict, parts: list[Part], constitution_path: Path, constitution,
                 eval_dir: Path | None, folder: Path) -> list[str]:
    """Write every file of the repository into ``folder``; returns their relative paths.
    The dry run IS this folder; the real push uploads it unchanged."""
    import yaml

    from plumbing.runs import read_errors

    for part in parts:
        write_shards(part, folder)
    shutil.copyfile(constitution_path, folder / CONSTITUTION_FILE)  # byte for byte the file that was hashed
    text = constitution_path.read_text(encoding="utf-8")
    text = text if text.endswith("\n") else text + "\n"
    errors = read_errors(config.run_dir)
    unlabelled = sum(e.get("kind") == "unlabelled" for e in errors)
    spec = manifest.get("spec", {})
    first = parts[0].rows[0]
    context = {
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
    (folder / "README.md").write_text(render_card(context), encoding="utf-8")
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _hub_token() -> str:
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise JudgeError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (or use --dry-run OUTDIR)")
    return token


def upload(config: PublishConfig, folder: Path, parts: list[Part], token: str) -> str:
    """create_repo + one upload_folder commit; earlier data shards of these configs are deleted."""
    import httpx
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = HfApi(token=token)
    stale = sorted({f"{p.data_dir}/*" for p in parts} | {f"{EVAL_DIR}/*"})
    try:
        url = api.create_repo(config.repo_id, repo_type="dataset", private=config.private, exist_ok=True)
        api.upload_folder(repo_id=config.repo_id, repo_type="dataset", folder_path=str(folder),
                          commit_message=f"rlaif publish: {sum(len(p.rows) for p in parts)} preference rows",
                          delete_patterns=stale)
    except OfflineModeIsEnabled:
        raise JudgeError("the Hub is unreachable in offline mode (HF_HUB_OFFLINE=1); unset it to publish") from None
    except (HfHubHTTPError, httpx.HTTPError) as e:
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise JudgeError(f"Hub upload to {config.repo_id} failed: {first_line}") from None
    return str(url)


def _check_dry_run_target(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise JudgeError(f"--dry-run {path} exists and is not an empty folder; give a new folder")


def run_publish(config: PublishConfig) -> str:
    """Validate everything, then build the folder and either keep it (dry run) or upload it.
    Returns a one-line summary; the token never appears in it."""
    validate_repo_id(config.repo_id)
    manifest = read_judge_run(config.run_dir)
    if config.dry_run is not None:
        _check_dry_run_target(config.dry_run)
    parts = make_parts(config.run_dir, config.test_size, config.seed)
    shas = {s for p in parts for s in p.rows["constitution_sha256"]}
    shas |= {manifest["spec"]["constitution_sha256"]} if manifest.get("spec", {}).get("constitution_sha256") else set()
    constitution_path, constitution = load_constitution_for(shas, config.constitution or
                                                            recorded_constitution(manifest))
    eval_dir = find_evaluation(config)
    counts = ", ".join(f"{len(p.rows)} {p.config}/{p.split}" for p in parts)
    if config.dry_run is not None:
        target = config.dry_run
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_dir(target) as tmp:  # checked empty above
            files = build_folder(config, manifest, parts, constitution_path, constitution, eval_dir, tmp)
        return f"dry run: {len(files)} files for {config.repo_id} ({counts}) in {target}"
    token = _hub_token()
    with tempfile.TemporaryDirectory(prefix="rlaif-publish-") as tmp:
        build_folder(config, manifest, parts, constitution_path, constitution, eval_dir, Path(tmp))
        url = upload(config, Path(tmp), parts, token)
    return f"published {counts} to {url}"
