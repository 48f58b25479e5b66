"""The web UI (service/web) over HTTP, without a browser: the pages render, every user or model string is escaped,
state changes need the page's CSRF token and never come from a GET, a token-protected service takes a browser
session, the playground's lint / save / versions, an A/B job end to end on the fake engine, and the data page
pages through a 10,000-row dataset reading only the row groups of its page. tests/test_web_browser.py drives
the same pages in a real Chromium."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from constitution import DEFAULT_PATH, load_constitution
from service import ab_job
from service.config import ServiceConfig
from service.web import playground

BASE = "http://127.0.0.1"
HOSTILE = '<script>alert(1)</script> <img src=x onerror="alert(2)"> [click](javascript:alert(3))'
PRINCIPLES = ("harm-general", "honest-truthful", "helpful-answer")
WAIT_S = 300  # a bound on waits for what a loaded 2-core box may take long to do (never a speed check)


# --- helpers the browser tests share ----------------------------------------------------------------------------


def make_app(root: Path, **settings):
    from service.api import create_app

    return create_app(ServiceConfig(root=root, poll_s=0.1, grace_s=2.0, **settings))


def csrf_of(client: TestClient) -> str:
    """The CSRF token the pages carry (and the cookie the client now holds)."""
    r = client.get("/ui/submit")
    assert r.status_code == 200, r.text
    return re.search(r'<meta name="csrf-token" content="([^"]+)">', r.text)[1]


def preference_rows(n: int, start: int = 0, hostile: int | None = None) -> list[dict]:
    """Preference rows (judge/records.py) with known values: principles cycle, p_chosen = 0.5 + (i % 50) / 100,
    every fourth row position-inconsistent; row ``hostile`` holds script in its prompt and responses."""
    out = []
    for i in range(start, start + n):
        text = HOSTILE if i == hostile else None
        pids = [PRINCIPLES[i % 3], PRINCIPLES[(i + 1) % 3]]
        out.append({
            "id": f"row{i:05d}", "prompt": [{"role": "user", "content": text or f"question {i}"}],
            "chosen": [{"role": "assistant", "content": text or f"chosen reply {i}"}],
            "rejected": [{"role": "assistant", "content": text or f"rejected reply {i}"}],
            "p_chosen": 0.5 + (i % 50) / 100,
            "votes": [{"principle_id": p, "order": o, "p_a": 0.6, "reason": None, "p_a_raw": None}
                      for p in pids for o in ("ab", "ba")],
            "principle_ids": pids, "position_consistent": i % 4 != 0, "judge_model": "fake",
            "constitution_sha256": "0" * 64, "template_sha256": "0" * 64})
    return out


def write_judge_run(run_dir: Path, n: int, shard_rows: int, group_rows: int, hostile: int | None = None) -> None:
    """A judge stage's shards (``data/train-*.parquet``), ``shard_rows`` rows per file in row groups of
    ``group_rows``."""
    from judge.records import PREFERENCES

    data = run_dir / "judge" / "data"
    data.mkdir(parents=True)
    for k, start in enumerate(range(0, n, shard_rows)):
        rows = preference_rows(min(shard_rows, n - start), start, hostile)
        table = pa.Table.from_pylist(rows, schema=PREFERENCES.arrow_schema)
        pq.write_table(table, data / f"train-{k:05d}.parquet", row_group_size=group_rows)


def fake_job(service, name: str = "fake job", plan=None, state: str = "succeeded") -> str:
    """A job recorded in the store (no process), in ``state``."""
    job_id = os.urandom(6).hex()
    service.backend.job_dir(job_id).mkdir(parents=True)
    (service.backend.job_dir(job_id) / "log").write_text(f"{HOSTILE}\n")
    service.store.insert(job_id, name, plan or [{"stage": "judge", "action": "run", "why": HOSTILE}], [], 100)
    if state != "queued":
        service.store.move(job_id, ("queued",), state, error=HOSTILE if state == "failed" else None)
    return job_id


@pytest.fixture
def served(tmp_path):
    """A TestClient of a fresh service on a temp root (no token)."""
    app = make_app(tmp_path / "root")
    with TestClient(app, base_url=BASE) as client:
        yield client, app.state.service


def edits_of(principle: str, compare: str) -> dict:
    return {principle: {"compare": compare}}


# --- pages, escaping, headers -----------------------------------------------------------------------------------


def test_pages_render_with_a_strict_content_security_policy_and_no_inline_script(served):
    client, service = served
    job = fake_job(service, name=f"job {HOSTILE}", state="failed")
    write_judge_run(service.backend.job_dir(job) / "run", 30, 30, 10, hostile=3)
    pages = ["/ui/jobs", "/ui/playground", "/ui/submit", f"/ui/jobs/{job}", f"/ui/jobs/{job}/data",
             f"/ui/jobs/{job}/ab", "/ui/jobs?fragment=1"]
    for url in pages:
        r = client.get(url)
        assert r.status_code == 200, (url, r.text[:300])
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "unsafe-inline" not in csp, url
        assert r.headers["x-content-type-options"] == "nosniff"
        for tag in re.findall(r"<script\b[^>]*>", r.text):  # only our static files, never inline code
            assert re.fullmatch(r'<script src="/ui/static/[a-z]+\.js" defer>', tag), (url, tag)
        assert "<script>alert" not in r.text and "<img src=x" not in r.text and 'href="javascript:' not in r.text
    jobs = client.get("/ui/jobs").text
    assert "job &lt;script&gt;alert(1)&lt;/script&gt;" in jobs
    job_page = client.get(f"/ui/jobs/{job}").text
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in job_page  # the plan's why and the error, as text
    data = client.get(f"/ui/jobs/{job}/data?page=0").text
    assert data.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 3  # prompt, chosen, rejected of row 3
    # a job's file is served sandboxed: an HTML file a job wrote runs no script in the service's origin
    (service.backend.job_dir(job) / "run" / "page.html").write_text("<script>alert(1)</script>")
    r = client.get(f"/api/v1/jobs/{job}/files/page.html")
    assert "sandbox" in r.headers["content-security-policy"]
    assert client.get("/ui/static/nothing.js").status_code == 404


def test_report_markdown_keeps_plots_and_drops_script(served):
    client, service = served
    job = fake_job(service)
    run = service.backend.job_dir(job) / "run"
    run.mkdir()
    (run / "report.md").write_text(f"# Report\n\n{HOSTILE}\n\n<b onclick=x>raw</b>\n\n![labels](judge_labels.png)\n\n"
                                   "| a | b |\n|---|---|\n| 1 | 2 |\n")
    (run / "judge_labels.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    page = client.get(f"/ui/jobs/{job}").text
    report = page[page.index('<article class="report"'):page.index("</article>")]
    assert "<h1>Report</h1>" in report and "<table>" in report
    assert f'<img src="/api/v1/jobs/{job}/files/judge_labels.png" alt="labels"' in report
    assert "&lt;script&gt;" in report and "&lt;b onclick=x&gt;" in report
    assert "javascript:" not in report.replace("[click](javascript:alert(3))", "")  # left as text, not a link
    assert "<a href" not in report


# --- CSRF, GET side effects, token ------------------------------------------------------------------------------


def _tree(root: Path) -> dict:
    files = {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")
             if p.is_file() and not p.name.startswith("service.db")}
    db = sqlite3.connect(root / "service.db")
    try:
        rows = db.execute("SELECT id, state, attempt FROM jobs ORDER BY id").fetchall()
    finally:
        db.close()
    return {"files": files, "jobs": rows}


def test_state_changes_need_the_pages_csrf_token_and_come_only_from_posts(served):
    client, service = served
    job = fake_job(service, state="running")
    token = csrf_of(client)
    body = {"constitution": str(DEFAULT_PATH), "edits": {}}
    before = _tree(service.config.root)
    for url in ["/ui/jobs", "/ui/playground", "/ui/submit", f"/ui/jobs/{job}", f"/ui/jobs/{job}/data",
                f"/ui/jobs/{job}/ab", "/ui/api/save", "/ui/api/compare", "/ui/api/lint",
                f"/ui/playground/versions?constitution={DEFAULT_PATH}", "/ui/submit/recipe?name=pipeline-cpu.yaml",
                f"/ui/playground?constitution={DEFAULT_PATH}&sample={playground.SAMPLE}"]:
        assert client.get(url).status_code in (200, 404, 405), url
    assert _tree(service.config.root) == before  # no GET changed a file or a job
    assert client.get("/ui/api/save").status_code == 405
    refused = [
        client.post("/ui/api/save", json=body),  # no header
        client.post("/ui/api/save", json=body, headers={"X-CSRF-Token": "x" * 43}),  # not the cookie's
        client.post("/ui/api/save", json=body, headers={"X-CSRF-Token": token, "Origin": "http://evil.example"}),
        client.post(f"/api/v1/jobs/{job}/cancel", headers={"X-CSRF-Token": token, "Sec-Fetch-Site": "cross-site"}),
        client.post(f"/api/v1/jobs/{job}/cancel", headers={"Origin": BASE}),  # a browser without the token
        client.post("/api/v1/uploads?name=x.txt", content=b"x", headers={"Sec-Fetch-Site": "same-site"}),
    ]
    for r in refused:
        assert r.status_code == 403 and r.json()["error"], r.text
    assert _tree(service.config.root) == before and service.store.get(job)["state"] == "running"
    ok = client.post("/ui/api/save", json={**body, "edits": edits_of("harm-general", "Which response is gentler?")},
                     headers={"X-CSRF-Token": token, "Origin": BASE, "Sec-Fetch-Site": "same-origin"})
    assert ok.status_code == 201, ok.text
    # the API's own clients (no browser headers) are unaffected
    assert client.post("/api/v1/uploads?name=p.jsonl", content=b'{"prompt": "hi"}\n').status_code == 201


def test_a_token_protected_service_takes_a_browser_session(tmp_path):
    secret = "s3cret-token-for-the-web-ui-tests"
    app = make_app(tmp_path / "root", token=secret)
    with TestClient(app, base_url=BASE) as client:
        r = client.get("/ui/jobs", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login?next=")
        assert client.get("/ui/login").status_code == 200
        assert client.get("/ui/static/app.css").status_code == 200  # the login page's stylesheet
        assert client.get("/api/v1/health").status_code == 401
        wrong = client.post("/ui/login", data={"token": "not-it"}, follow_redirects=False)
        assert wrong.status_code == 401 and "rlaif_session" not in wrong.headers.get("set-cookie", "")
        r = client.post("/ui/login?next=https://evil.example/", data={"token": secret}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/ui/jobs"  # never sent to another site
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert secret not in cookie  # the cookie holds an HMAC of the token, not the token
        assert client.get("/ui/jobs").status_code == 200
        assert client.get("/api/v1/health").status_code == 200  # the session stands for the bearer token
        token = csrf_of(client)
        r = client.post("/api/v1/uploads?name=a.txt", content=b"a")  # a session cookie: a browser, needs CSRF
        assert r.status_code == 403
        r = client.post("/api/v1/uploads?name=a.txt", content=b"a", headers={"X-CSRF-Token": token})
        assert r.status_code == 201, r.text


def test_a_page_asked_for_under_another_host_name_is_refused(served):
    client, _ = served
    assert client.get("/ui/jobs", headers={"Host": "rebound.evil.example"}).status_code == 403
    assert client.get("/ui/jobs", headers={"Host": "localhost:8000"}).status_code == 200


# --- playground -------------------------------------------------------------------------------------------------


def test_lint_shows_the_loaders_one_line_error_at_the_principle_then_clears(served):
    client, _ = served
    token = csrf_of(client)

    def lint(text: str) -> dict:
        r = client.post("/ui/api/lint", json={"constitution": str(DEFAULT_PATH), "edits": edits_of("harm-bias", text)},
                        headers={"X-CSRF-Token": token})
        assert r.status_code == 200, r.text
        return r.json()

    broken = lint("Which of these is {{ assistant }")
    assert not broken["ok"] and (broken["principle"], broken["field"]) == ("harm-bias", "compare")
    assert "Jinja syntax error" in broken["error"] and "\n" not in broken["error"]
    reaching = lint("{{ ().__class__.__mro__ }}")
    assert not reaching["ok"] and "unsafe" in reaching["error"]
    fixed = lint("Which of these responses is less biased, {{ assistant }}?")
    assert fixed["ok"] and fixed["sha256"] != load_constitution(DEFAULT_PATH).sha256()
    r = client.post("/ui/api/lint", json={"constitution": "/etc/passwd", "edits": {}}, headers={"X-CSRF-Token": token})
    assert r.status_code == 422 and "not a file the service offers" in r.json()["error"]


def test_save_writes_new_versions_never_over_a_file_and_lists_their_diffs(served):
    client, service = served
    token = csrf_of(client)
    base = load_constitution(DEFAULT_PATH)

    def save(text: str, constitution=DEFAULT_PATH) -> dict:
        r = client.post("/ui/api/save", json={"constitution": str(constitution), "edits": edits_of("harm-bias", text)},
                        headers={"X-CSRF-Token": token})
        assert r.status_code == 201, r.text
        return r.json()

    first = save("Which of these responses is fairer?")
    assert first["written"] and first["version"] == base.version + 1
    saved = Path(first["path"])
    assert saved.name == f"{base.name}-v{base.version + 1}.yaml" and saved.parent.parent == service.config.uploads
    assert load_constitution(saved).sha256() == first["sha256"] and load_constitution(saved).version == 2
    stamp = saved.stat().st_mtime_ns
    again = save("Which of these responses is fairer?")  # same text from the same base: the same file, untouched
    assert again["path"] == first["path"] and not again["written"] and saved.stat().st_mtime_ns == stamp
    second = save("Which of these responses treats people equally?", constitution=saved)
    assert second["version"] == 3 and second["path"] != first["path"] and saved.stat().st_mtime_ns == stamp
    r = client.post("/ui/api/save", json={"constitution": str(DEFAULT_PATH), "edits": edits_of("harm-bias", "{{ x")},
                    headers={"X-CSRF-Token": token})
    assert r.status_code == 422 and "harm-bias.compare" in r.json()["error"]
    history = playground.version_history(service.config.uploads, saved)
    assert [v["version"] for v in history] == [1, 2, 3]
    assert history[1]["diff"]["changed"] == [{"id": "harm-bias", "fields": [{
        "field": "compare", "old": base.principle("harm-bias").compare, "new": "Which of these responses is fairer?"}]}]
    assert "version" in history[2]["diff"]["meta"]
    page = client.get(f"/ui/playground/versions?constitution={saved}").text
    assert "v3" in page and "treats people equally" in page


# --- the A/B job ------------------------------------------------------------------------------------------------


def _ab_text(tmp: Path, service, **over) -> str:
    fields = {"old": str(DEFAULT_PATH), "new": str(DEFAULT_PATH), "human": str(playground.SAMPLE), "limit": 4,
              "judge": {"engine": "fake", "model": "fake-judge"}, **over}
    return ab_job.recipe_text("ab", Path(fields["old"]), Path(fields["new"]), Path(fields["human"]), fields["limit"],
                              fields["judge"])


def test_ab_recipe_is_checked_before_it_is_queued(tmp_path, served):
    _, service = served
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    name, plan = ab_job.check_ab(_ab_text(tmp_path, service), [], job_dir, service.allowed)
    assert [s["stage"] for s in plan] == ["ab"] and "4 labelled pairs" in plan[0]["why"]
    args = ab_job.ab_arguments(job_dir)
    assert args[:4] == ["constitution", "ab", str(DEFAULT_PATH), str(DEFAULT_PATH)]
    assert args[args.index("--out") + 1] == str(job_dir / "run" / "ab") and "--overwrite" in args
    outside = tmp_path / "mine.yaml"
    outside.write_text(Path(DEFAULT_PATH).read_text())
    cases = {
        "is outside the folders": _ab_text(tmp_path, service, new=str(outside)),
        "names Python code": _ab_text(tmp_path, service, judge={"engine": "os:system"}),
        "not an absolute path": "kind: constitution-ab\nold: a.yaml\nnew: b.yaml\nhuman: c.jsonl\n",
        "Extra inputs are not permitted": "kind: constitution-ab\nold: /a\nnew: /b\nhuman: /c\nout: /tmp/x\n",
        "holds a secret": _ab_text(tmp_path, service) + "# hf_abcdefghijklmnopqrstuvwxyz0123456789\n",
    }
    for expected, text in cases.items():
        with pytest.raises(ab_job.ABRefused, match=expected):
            ab_job.check_ab(text, [], job_dir, service.allowed)
    with pytest.raises(ab_job.ABRefused, match="no overrides"):
        ab_job.check_ab(_ab_text(tmp_path, service), ["judge.seed=1"], job_dir, service.allowed)
    broken = Path(playground.store(service.config.uploads, "broken.yaml", "name: x\nversion: 1\nprinciples: []\n")[0])
    with pytest.raises(ab_job.ABRefused, match="broken.yaml") as e:
        ab_job.check_ab(_ab_text(tmp_path, service, new=str(broken)), [], job_dir, service.allowed)
    assert "\n" not in str(e.value)


def wait_for(client: TestClient, job_id: str, states=("succeeded", "failed", "cancelled")) -> dict:
    deadline = time.monotonic() + WAIT_S
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, f"job stuck in {job['state']}"
        time.sleep(0.2)


def hostile_sample(uploads: Path) -> Path:
    """Four HH-RLHF rows whose replies hold script, stored as an upload."""
    rows = [{"chosen": f"\n\nHuman: question {i}?\n\nAssistant: {HOSTILE} good answer {i}",
             "rejected": f"\n\nHuman: question {i}?\n\nAssistant: <img src=x onerror=alert({i})> bad answer {i}"}
            for i in range(4)]
    return playground.store(uploads, "hostile.jsonl", "".join(json.dumps(r) + "\n" for r in rows))[0]


def test_compare_runs_as_a_service_job_and_its_result_shows_the_flips_side_by_side(served, monkeypatch):
    """The playground's Compare, as its script does it: /ui/api/compare writes the draft and answers the A/B
    recipe, POST /api/v1/jobs queues it, the job runs ``rlaif constitution ab`` on the fake engine, and the
    result fragment holds the table and the flipped pairs' replies (escaped)."""
    client, service = served
    token = csrf_of(client)
    sample = hostile_sample(service.config.uploads)
    body = {"constitution": str(DEFAULT_PATH), "sample": str(sample), "limit": 4,
            "edits": {p: {"compare": f"Which response would {p} prefer? Answer carefully."} for p in
                      ("harm-general", "harm-bias", "helpful-answer", "honest-truthful", "harm-illegal")},
            "judge": {"engine": "fake", "model": "fake-judge", "principles_per_pair": 3}}
    r = client.post("/ui/api/compare", json=body, headers={"X-CSRF-Token": token})
    assert r.status_code == 200, r.text
    assert Path(r.json()["new"]).parent.parent == service.config.uploads
    job = client.post("/api/v1/jobs", json={"recipe": r.json()["recipe"]}, headers={"X-CSRF-Token": token})
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    done = wait_for(client, job_id)
    assert done["state"] == "succeeded", client.get(f"/api/v1/jobs/{job_id}/log").text[-3000:]
    fragment = client.get(f"/ui/jobs/{job_id}/ab?fragment=1").text
    metrics = json.loads((service.backend.job_dir(job_id) / "run" / "ab" / "metrics.json").read_text())
    assert 'id="ab-table"' in fragment and "agreement with the label" in fragment
    delta = metrics["paired"]["difference"]["value"]
    assert (f"{delta:+.3f}" if delta is not None else "n/a") in fragment
    assert "McNemar" in fragment and "kappa" in fragment
    flips = metrics["flips"]
    assert flips and fragment.count('<tr class="flip') == len(flips)  # the fake judge's verdicts move with the text
    assert "good answer" in fragment and "bad answer" in fragment
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in fragment and "<script>alert" not in fragment
    assert "&lt;img src=x onerror=alert(" in fragment and "<img src=x" not in fragment
    assert client.get(f"/ui/jobs/{job_id}").status_code == 200
    jobs = client.get("/ui/jobs").text
    assert f"/ui/jobs/{job_id}" in jobs and "stage-done" in jobs


# --- the data page ----------------------------------------------------------------------------------------------


def test_data_page_reads_only_the_row_groups_of_its_page(served, monkeypatch):
    """10,000 rows in 4 files of 2,500 rows, row groups of 500 (20 groups). A page of 20 rows reads every row
    with all columns only from the one or two groups that hold it; the other groups are read for the small
    filter columns alone, and no file is read whole (``pq.read_table`` is never called)."""
    client, service = served
    job = fake_job(service)
    write_judge_run(service.backend.job_dir(job) / "run", 10_000, 2_500, 500)
    full_reads: list[int] = []
    real = pq.ParquetFile.read_row_group

    def spy(self, i, columns=None, **kw):
        table = real(self, i, columns=columns, **kw)
        if columns is None or "chosen" in columns:
            full_reads.append(table.num_rows)
        return table

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("the data page read a file whole"))

    def ids(url: str) -> list[str]:
        full_reads.clear()
        r = client.get(url)
        assert r.status_code == 200, r.text[:500]
        assert sum(full_reads) <= 1000, full_reads  # at most two groups of 500 read with every column
        return re.findall(r'<article class="row" data-id="(row\d+)">', r.text)

    assert ids(f"/ui/jobs/{job}/data") == [f"row{i:05d}" for i in range(20)]
    assert ids(f"/ui/jobs/{job}/data?page=499") == [f"row{i:05d}" for i in range(9980, 10_000)]
    assert ids(f"/ui/jobs/{job}/data?page=124") == [f"row{i:05d}" for i in range(2480, 2500)]
    assert ids(f"/ui/jobs/{job}/data?page=500") == []
    # filters: principle, position consistency, p range; the expected rows computed from the rows' recipe
    expected = [i for i in range(10_000) if "helpful-answer" in (PRINCIPLES[i % 3], PRINCIPLES[(i + 1) % 3])
                and i % 4 != 0 and 0.9 <= 0.5 + (i % 50) / 100 <= 0.95]
    url = f"/ui/jobs/{job}/data?principle=helpful-answer&consistent=yes&p_min=0.9&p_max=0.95"
    assert ids(url) == [f"row{i:05d}" for i in expected[:20]]
    assert ids(url + "&page=3") == [f"row{i:05d}" for i in expected[60:80]]
    page = client.get(url).text
    assert f"{len(expected)} rows" in page and 'value="helpful-answer" selected' in page
    assert ids(f"/ui/jobs/{job}/data?consistent=no&page=1") == [f"row{i:05d}" for i in range(80, 160, 4)]
