"""``rlaif publish``: a judge run -> a Hugging Face Hub dataset with a dataset card.

One function, ``build_folder``, writes every file of the repository: parquet shards in the
layout ``Dataset.push_to_hub`` uses (``data/{split}-{i:05d}-of-{n:05d}.parquet`` for the default
config, ``<config>/train-...`` for the others; ``judge/parts.py``, which also draws the test split
by prompt), ``README.md`` (the card: ``publish/card.py``) and ``constitution.yaml``. ``--dry-run
OUTDIR`` is that folder, written only into an empty or new folder; the real push builds the same
folder in a temp dir and uploads it with ``HfApi.create_repo`` + ``HfApi.upload_folder`` in one
commit. We do not call ``push_to_hub``: it writes its own README (``dataset_info``, merged
``configs``) that a dry run could only imitate, so the dry run would stop being the exact mirror
of what lands on the Hub. ``upload_folder(delete_patterns=...)`` removes data shards of an earlier
publish, which ``push_to_hub`` also does.

The token comes from ``huggingface_hub.get_token()`` (``HF_TOKEN``, then the login file) and is only
ever handed to ``HfApi``: never logged, printed or written
(tests/test_publish.py::test_publish_dry_run_writes_the_repository_and_never_the_token).
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
from pathlib import Path

from judge.errors import JudgeError
from judge.parts import Part, make_parts, write_shards
from plumbing import atomic
from publish.card import EVAL_DIR, card_context, find_evaluation, render_card
from publish.config import PublishConfig

CONSTITUTION_FILE = "constitution.yaml"


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
    from constitution import load_constitution, path_or_default

    if len(run_shas) != 1:
        raise JudgeError(f"the run's rows carry {len(run_shas)} different constitution_sha256 values; "
                         f"publish a run judged with one constitution")
    want = next(iter(run_shas))
    source = path_or_default(path)
    const = load_constitution(source)
    if const.sha256() != want:
        hint = "pass the file it was judged with" if path else \
            "it was not judged with the built-in constitution; pass --constitution PATH of the file it used"
        raise JudgeError(f"{source}: constitution sha256 {const.sha256()[:12]}... does not match the run's "
                         f"constitution_sha256 {want[:12]}...; {hint}")
    return Path(source), const


def build_folder(config: PublishConfig, manifest: dict, parts: list[Part], constitution_path: Path, constitution,
                 eval_dir: Path | None, folder: Path) -> list[str]:
    """Write every file of the repository into ``folder``; returns their relative paths.
    The dry run IS this folder; the real push uploads it unchanged."""
    for part in parts:
        write_shards(part, folder)
    shutil.copyfile(constitution_path, folder / CONSTITUTION_FILE)  # byte for byte the file that was hashed
    context = card_context(config, manifest, parts, constitution_path, constitution, eval_dir, folder)
    (folder / "README.md").write_text(render_card(context), encoding="utf-8")
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _hub_token() -> str:
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise JudgeError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (or use --dry-run OUTDIR)")
    return token


def _unreachable() -> tuple[type[BaseException], ...]:
    """Exceptions meaning no answer came from the Hub (refused connection, DNS failure, timeout, TLS, proxy):
    socket-level OSErrors (and requests' errors, which are OSErrors, for a huggingface_hub that uses
    requests), and the TransportError of httpx and of httpx2, the fork huggingface_hub 1.x+ may talk through."""
    errors: list[type[BaseException]] = [OSError]
    for name in ("httpx", "httpx2"):
        try:
            errors.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def _first_line(e: BaseException) -> str:
    return " ".join((str(e).strip().splitlines() or [type(e).__name__])[0].split())


def upload(config: PublishConfig, folder: Path, parts: list[Part], token: str) -> str:
    """create_repo + one upload_folder commit; earlier data shards of these configs are deleted. A Hub that
    answers with an error and a Hub that cannot be reached are each one line (tests/bad_inputs/cases.py:
    publish-hub-unreachable, a closed port as HF_ENDPOINT)."""
    from huggingface_hub import HfApi, constants
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
    except HfHubHTTPError as e:  # the Hub answered: 401, 403, 404, 5xx (an OSError too, so caught first)
        raise JudgeError(f"Hub upload to {config.repo_id} failed: {_first_line(e)}") from None
    except _unreachable() as e:
        raise JudgeError(f"could not reach the Hub at {constants.ENDPOINT}: {_first_line(e)}; check the network, "
                         f"or HF_ENDPOINT if it is set") from None
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
