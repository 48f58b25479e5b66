"""No user file is ever replaced or deleted (pipeline/root.py, plumbing/runs.py ``check_out_dir``).

A workspace holds a user's files where a command could write: a ``pipeline.json`` of another tool and a
``report.md`` beside it, a finished ``rlaif run`` root (built with the fake engine: generate, judge and a
dry-run publish) into whose ``publish/`` a user put a ``LICENSE`` and into whose ``generate/`` a user put
notes, a folder of a user's bench results, and a plain folder of notes. Every command that writes a folder is
run against them: each refuses in one line, and every file of the workspace is byte-identical afterwards.
The pipeline's own rules (whose root, whose report, whose stage files; inputs read and the Hub checked before
anything is created) are tested on the same kind of root in process.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from pipeline.loop import run_pipeline
from pipeline.recipe import PipelineRecipe
from pipeline.root import (
    STATE,
    PipelineError,
    check_stage_folder,
    clear_stage_folder,
    read_state,
    write_root_files,
)

PROMPTS = '{"prompt": "How do I keep basil alive?"}\n{"prompt": "Name a prime."}\n'
FOREIGN_STATE = '{"tool": "another-pipeline", "stages": ["fetch", "train"]}\n'
FAKE = {"engine": {"engine": "fake"}, "judge": {"engine": "fake"}}


def loop(root: str, prompts: str = "p.jsonl", **over) -> dict:
    """A recipe the fake engine runs in seconds: generate, judge, and publish's dry run into <root>/publish."""
    return {"name": "user files", "root": root, "prompts": prompts, "stages": ["generate", "judge", "publish"],
            **FAKE, "publish": {"repo_id": "me/user-files"}, **over}


def _run(raw: dict, **kw) -> list:
    return run_pipeline(PipelineRecipe.model_validate(raw), say=lambda _: None, **kw)


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.jsonl").write_text(PROMPTS)
    return tmp_path


# --- the pipeline's rules, in process ------------------------------------------------------------------------

@pytest.mark.parametrize("content", [FOREIGN_STATE, "not json at all\n", '{"stages": {}, "recipe": {}}\n'],
                         ids=["another-tool", "not-json", "no-marker"])
def test_a_pipeline_json_without_our_marker_is_refused_and_left_alone(here, content):
    """Another tool's file, a file that is not JSON, and a state of our shape without the format marker (a root
    from before the marker): refused before anything is written, never with advice to remove the file."""
    (here / "r").mkdir()
    (here / "r" / STATE).write_text(content)
    (here / "r" / "report.md").write_text("my report\n")
    before = _hashes(here / "r")
    with pytest.raises(PipelineError, match="its pipeline.json is not a state of rlaif run") as e:
        _run(loop("r"))
    assert "remove" not in str(e.value) and "delete" not in str(e.value)
    assert _hashes(here / "r") == before and sorted(os.listdir(here / "r")) == [STATE, "report.md"]


def test_a_finished_root_replaces_only_what_it_wrote(here):
    """A finished root re-runs its publish stage only while publish/ holds just the files the stage wrote; a
    user's LICENSE there is refused (changed spec or --from), kept byte for byte, and once moved out the stage
    runs and replaces its own folder. An edited report.md, and a stranger's file in the root, are refused too."""
    _run(loop("r"))
    state = json.loads((here / "r" / STATE).read_text())
    assert state["format"] == "rlaif-pipeline" and state["version"] == 1
    assert state["stages"]["publish"]["files"] == ["README.md", "constitution.yaml",
                                                   "data/train-00000-of-00001.parquet"]
    assert state["written"]["report.md"] == [hashlib.sha256((here / "r" / "report.md").read_bytes()).hexdigest()]
    assert [s.action for s in _run(loop("r"))] == ["reuse"] * 3  # ours again: reused, and the report rewritten

    license_ = here / "r" / "publish" / "LICENSE"
    license_.write_text("my licence\n")
    changed = loop("r", publish={"repo_id": "me/user-files", "license": "apache-2.0"})
    for raw, kw in ((changed, {}), (loop("r"), {"start": "publish"})):
        with pytest.raises(PipelineError, match="publish/LICENSE was not written by rlaif run, and the publish "
                                                "stage is about to replace its folder; move it out of r/publish"):
            _run(raw, **kw)
        assert license_.read_text() == "my licence\n"
    license_.rename(here / "LICENSE")
    assert [s.action for s in _run(changed)] == ["reuse", "reuse", "run"]
    assert "apache-2.0" in (here / "r" / "publish" / "README.md").read_text()

    report = here / "r" / "report.md"
    report.write_text(report.read_text() + "\nMy notes on this run.\n")
    with pytest.raises(PipelineError, match="report.md is not the one rlaif run wrote"):
        _run(changed)
    assert report.read_text().endswith("My notes on this run.\n")
    report.rename(here / "my-report.md")
    (here / "r" / "todo.txt").write_text("mine\n")
    with pytest.raises(PipelineError, match="root r: todo.txt was not written by rlaif run; move it out of the root"):
        _run(changed)


def test_a_stage_folder_about_to_be_replaced_holds_only_our_files(here):
    """A user's file in a run directory's data/ is refused when the stage re-runs, not when it is reused; the
    files a killed stage's writer left (shards, manifest, log, temps) are ours though no finish listed them."""
    _run(loop("r"))
    mine = here / "r" / "generate" / "data" / "mine.parquet"
    mine.write_bytes(b"PAR1 mine")
    assert [s.action for s in _run(loop("r"))] == ["reuse"] * 3  # nothing replaced: nothing refused
    with pytest.raises(PipelineError, match="generate/data/mine.parquet was not written by rlaif run"):
        _run(loop("r", generate={"max_tokens": 7}))
    assert mine.read_bytes() == b"PAR1 mine"

    state = read_state(here / "r")
    del state["stages"]["judge"]["files"]  # killed before it finished: nothing listed
    (here / "r" / "judge" / "data" / ".train-00001-000000001.parquet.tmp").write_bytes(b"half")
    check_stage_folder(here / "r", state, "judge")  # manifest, shards, metrics, log, temp: all the writer's
    (here / "r" / "judge" / "notes.txt").write_text("mine\n")
    with pytest.raises(PipelineError, match="judge/notes.txt was not written by rlaif run"):
        check_stage_folder(here / "r", state, "judge")


def test_the_publish_preview_is_emptied_file_by_file_and_the_report_never_replaces_a_users(here):
    """Publish's dry run writes only into an empty folder, so the loop empties its own preview: only the files the
    state listed go (a user's file is refused first, and kept); the report is written only over a report the
    loop wrote, so one a user put in the root while the stages ran stays as it is."""
    _run(loop("r"))
    state = read_state(here / "r")
    license_ = here / "r" / "publish" / "LICENSE"
    license_.write_text("my licence\n")
    with pytest.raises(PipelineError, match="publish/LICENSE was not written by rlaif run"):
        clear_stage_folder(here / "r", state, "publish")
    assert _hashes(here / "r" / "publish").keys() == {"LICENSE", *state["stages"]["publish"]["files"]}
    license_.unlink()
    clear_stage_folder(here / "r", state, "publish")
    assert not (here / "r" / "publish").exists()

    report = here / "r" / "report.md"
    report.write_text("my own report\n")  # as if written while the stages ran, after the root was checked
    with pytest.raises(PipelineError, match="report.md is not the one rlaif run wrote .*the report was not written"):
        write_root_files(here / "r", state, {"report.md": b"# new\n"})
    assert report.read_text() == "my own report\n" and read_state(here / "r")["written"] == state["written"]
    report.unlink()
    write_root_files(here / "r", state, {"report.md": b"# new\n"})
    assert read_state(here / "r")["written"]["report.md"] == [hashlib.sha256(b"# new\n").hexdigest()]


@pytest.mark.parametrize("case", ["prompts-unreadable", "prompts-binary", "constitution-broken", "grpo-data-no-prompt"])
def test_a_refusal_leaves_nothing_behind(here, case):
    """Each stage's inputs are read before the root exists: a bad one leaves no root, state, lock or log."""
    if case == "prompts-unreadable":
        raw = loop("r", prompts="/etc/shadow")
    elif case == "prompts-binary":
        (here / "b.jsonl").write_bytes(b"\x00\xff\xfe binary")
        raw = loop("r", prompts="b.jsonl")
    elif case == "constitution-broken":
        (here / "c.yaml").write_text("name: [unclosed\n")
        raw = loop("r", constitution="c.yaml")
    else:
        (here / "d.jsonl").write_text('{"question": "What is 1 + 1?", "answer": "#### 2"}\n')
        raw = {"name": "t", "root": "r", "stages": ["grpo"], "grpo": {"data": "d.jsonl", "reward_funcs": ["gsm8k"]}}
    with pytest.raises(PipelineError, match=r"^stage (generate|revise|judge|grpo): "):
        _run(raw)
    assert not (here / "r").exists()


# --- the Hub, checked before a publish that uploads ---------------------------------------------------------

def _env(home: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLAIF_", "HF_", "XDG_", "TRANSFORMERS_"))}
    return {**env, "HOME": str(home), "HF_HOME": str(home / "hf"), "RLAIF_NO_MODEL": "1", "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "HF_HUB_OFFLINE": "0", "NO_COLOR": "1", "COLUMNS": "200", **extra}


def _rlaif(cwd: Path, env: dict, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlaif", *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns: nothing listens there


class _Hub(http.server.BaseHTTPRequestHandler):
    """A local stand-in for the Hub's whoami (HF_ENDPOINT points here): ``reply`` is (status, role)."""

    reply: tuple[int, str] = (200, "write")
    seen: list[tuple[str, str | None]] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        status, role = self.reply
        body = json.dumps({"type": "user", "name": "me", "auth": {"accessToken": {"role": role}}} if status == 200
                          else {"error": "Invalid credentials in Authorization header"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        return


@pytest.fixture
def hub():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hub.seen = []
    yield server
    server.shutdown()
    server.server_close()


TOKEN = "hf_" + "a1B2c3D4e5" * 3


def test_a_publish_that_uploads_checks_the_token_and_the_hub_before_anything_runs(tmp_path, hub):
    """No token, a Hub that cannot be reached (HF_ENDPOINT at a closed 127.0.0.1 port), a token the Hub refuses
    and a read-only token: each one line naming the fix, before the root exists. A writable token passes the
    check (the loop runs; the stand-in Hub then fails the upload). Nothing but 127.0.0.1 is contacted."""
    (tmp_path / "p.jsonl").write_text(PROMPTS)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(loop("r", publish={"repo_id": "me/x", "dry_run": False})))
    stand_in = f"http://127.0.0.1:{hub.server_address[1]}"
    closed = f"http://127.0.0.1:{_closed_port()}"
    cases = {
        "no token": ({}, "error: stage publish: no Hugging Face token: set HF_TOKEN or run `hf auth login`"),
        "unreachable": ({"HF_TOKEN": TOKEN, "HF_ENDPOINT": closed},
                        f"error: stage publish: could not reach the Hub at {closed} ("),
        "refused": ({"HF_TOKEN": TOKEN, "HF_ENDPOINT": stand_in, "reply": (401, "")},
                    f"error: stage publish: the Hub at {stand_in} refused the token (401)"),
        "read-only": ({"HF_TOKEN": TOKEN, "HF_ENDPOINT": stand_in, "reply": (200, "read")},
                      "error: stage publish: the Hugging Face token is read-only"),
    }
    for name, (extra, line) in cases.items():
        _Hub.reply = extra.pop("reply", (200, "write"))
        res = _rlaif(tmp_path, _env(tmp_path / "home", **extra), "run", "p.yaml")
        assert res.returncode == 2 and res.stderr.splitlines()[0].startswith(line), (name, res.stderr)
        assert len(res.stderr.splitlines()) == 1 and TOKEN not in res.stderr + res.stdout, name
        assert not (tmp_path / "r").exists(), name
    # the token went to whoami only, in its header (huggingface_hub may also read its agent registry, token-less)
    assert [r for r in _Hub.seen if r[0] != "/api/agent-harnesses"] == [("/api/whoami-v2", f"Bearer {TOKEN}")] * 2
    assert {auth for path, auth in _Hub.seen if path == "/api/agent-harnesses"} <= {None}

    _Hub.reply = (200, "write")
    env = _env(tmp_path / "home", HF_TOKEN=TOKEN, HF_ENDPOINT=stand_in, RLAIF_NO_MODEL="")  # the fake engine runs
    res = _rlaif(tmp_path, env, "run", "p.yaml")
    assert "[judge]" in res.stdout and (tmp_path / "r" / "judge" / "manifest.json").is_file(), res.stderr
    assert res.returncode == 2 and "stage publish" not in res.stderr  # the upload's own error, after the check


# --- acceptance: every command that writes a folder, against a user's files ----------------------------------

def _workspace(dest: Path) -> None:
    """The user's files (module docstring) and the inputs the commands read."""
    dest.mkdir()
    files = {
        "p.jsonl": PROMPTS,
        "pairs.jsonl": '{"prompt": "hi", "response_a": "hello", "response_b": "go away"}\n',
        "hh.jsonl": '{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: hello", '
                    '"rejected": "\\n\\nHuman: hi\\n\\nAssistant: go away"}\n',
        "gsm8k.jsonl": '{"question": "What is 1 + 1?", "answer": "1 + 1 = 2\\n#### 2"}\n',
        "mbpp.jsonl": '{"text": "Add two numbers.", "test_list": ["assert add(1, 2) == 3"]}\n',
        "sft.jsonl": '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n',
        "grpo.jsonl": '{"prompt": "What is 1 + 1?", "answer": "#### 2"}\n',
        "swarm.json": '[{"critic": "Find harm.", "revision": "Remove harm."}]\n',
        "foreign/pipeline.json": FOREIGN_STATE,
        "foreign/report.md": "# My own report\n",
        "bench/results.md": "# my benchmark notes\n",
        "bench/results.json": '{"mine": true}\n',
        "user/notes.txt": "my notes\n",
    }
    for rel, text in files.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(text)
    cwd = Path.cwd()
    os.chdir(dest)
    try:
        _run(loop("fin"))
    finally:
        os.chdir(cwd)
    (dest / "fin" / "publish" / "LICENSE").write_text("my licence\n")
    (dest / "fin" / "generate" / "notes.txt").write_text("my notes on these responses\n")
    for name, raw in {"fin-changed.yaml": loop("fin", publish={"repo_id": "me/user-files", "license": "mit"}),
                      "fin.yaml": loop("fin"), "foreign.yaml": loop("foreign")}.items():
        (dest / name).write_text(yaml.safe_dump(raw))


def _out(*argv: str) -> tuple[str, ...]:
    return (*argv, "--overwrite")


FAKE_ENGINE = ("--engine", "fake")
COMMANDS: dict[str, tuple[str, ...]] = {
    "run finished root, changed publish": ("run", "fin-changed.yaml"),
    "run finished root --from publish": ("run", "fin.yaml", "--from", "publish"),
    "run another tool's root": ("run", "foreign.yaml"),
    "demo another tool's root": ("demo", "--out", "foreign"),
    "demo finished root": ("demo", "--out", "fin"),
    "generate user folder": _out("generate", "--prompts", "p.jsonl", "--out", "user", *FAKE_ENGINE),
    "generate another tool's root": _out("generate", "--prompts", "p.jsonl", "--out", "foreign", *FAKE_ENGINE),
    "generate into publish/": _out("generate", "--prompts", "p.jsonl", "--out", "fin/publish", *FAKE_ENGINE),
    "revise user folder": _out("revise", "--prompts", "p.jsonl", "--out", "user", *FAKE_ENGINE),
    "judge user folder": _out("judge", "--input", "pairs.jsonl", "--out", "user", *FAKE_ENGINE),
    "judge into publish/": _out("judge", "--input", "pairs.jsonl", "--out", "fin/publish", *FAKE_ENGINE),
    "judge-eval user folder": _out("judge-eval", "--human", "hh.jsonl", "--out", "user", *FAKE_ENGINE),
    "eval user folder": _out("eval", "--policy", "smollm2-135m", "--reference", "smollm2-135m", "--prompts",
                             "p.jsonl", "--out", "user", *FAKE_ENGINE),
    "publish --dry-run into publish/": ("publish", "fin/judge", "--repo-id", "me/x", "--dry-run", "fin/publish"),
    "publish --dry-run user folder": ("publish", "fin/judge", "--repo-id", "me/x", "--dry-run", "user"),
    "data gsm8k user folder": _out("data", "gsm8k", "gsm8k.jsonl", "--out", "user"),
    "data mbpp user folder": _out("data", "mbpp", "mbpp.jsonl", "--out", "user"),
    "data arithmetic user folder": _out("data", "arithmetic", "--out", "user"),
    "align sft user folder": _out("align", "sft", "--data", "sft.jsonl", "--out", "user"),
    "align reward user folder": _out("align", "reward", "--data", "fin/judge", "--out", "user"),
    "align dpo into publish/": _out("align", "dpo", "--data", "fin/judge", "--out", "fin/publish"),
    "align grpo user folder": _out("align", "grpo", "--data", "grpo.jsonl", "--reward", "gsm8k", "--out", "user"),
    "align ppo user folder": _out("align", "ppo", "--prompts", "p.jsonl", "--reward-model", "fin/judge", "--out",
                                  "user"),
    "bench all user results": ("bench", "all", "--out", "bench"),
    "bench all another tool's root": ("bench", "all", "--out", "foreign"),
    "constitution import-hf onto report.md": ("constitution", "import-hf", "swarm.json", "--out", "foreign/report.md"),
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, dict, dict]]:
    """Each command in its own copy of the workspace, three at a time: (result, hashes before, hashes after)."""
    base = tmp_path_factory.mktemp("user-files")
    _workspace(base / "template")
    before = _hashes(base / "template")

    def one(i: int, argv: tuple[str, ...]):
        ws = base / f"case-{i}"
        shutil.copytree(base / "template", ws, symlinks=True)
        res = _rlaif(ws, _env(base / f"home-{i}", HF_HUB_OFFLINE="1"), *argv)
        return res, before, _hashes(ws)

    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(one, i, argv) for i, (name, argv) in enumerate(COMMANDS.items())}
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_leaves_every_user_file_as_it_was(outcomes, name):
    res, before, after = outcomes[name]
    shown = f"rlaif {' '.join(COMMANDS[name])}\nexit {res.returncode}\n{res.stderr[-2000:]}"
    assert res.returncode == 2 and len(res.stderr.splitlines()) == 1, shown
    assert "remove" not in res.stderr and "delete" not in res.stderr, shown  # never: delete your own file
    assert {k: after.get(k) for k in before} == before, shown
    assert set(after) == set(before), shown  # and nothing new beside them
