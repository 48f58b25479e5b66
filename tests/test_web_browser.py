"""The web UI in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright; no browser is
downloaded): the playground lints a broken principle as it is typed, then compares (an A/B job on the fake
engine) and fills in the flips table; a recipe submitted from the submit page streams its log and is cancelled
from its page; pages holding a model's ``<script>`` and ``onerror=`` run nothing.

The service runs in this process (uvicorn on 127.0.0.1 in a thread, stopped by the fixture); its jobs, the A/B
comparison included (service/ab_job.py), are real process groups."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from conftest import free_port
from test_web_ui import HOSTILE, fake_job, make_app, write_judge_run

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
ROOT = Path(__file__).resolve().parents[1]
DEMO_PROMPTS = ROOT / "pipeline" / "data" / "demo_prompts.jsonl"
WAIT_MS = 240_000  # a bound on waits for what a loaded 2-core box may take long to do (never a speed check)

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the dev extra installs it
    sync_playwright = None
else:
    expect.set_options(timeout=WAIT_MS)

pytestmark = pytest.mark.skipif(
    sync_playwright is None or not CHROMIUM.is_file(),
    reason="needs Debian's chromium and playwright: `apt-get install chromium chromium-driver` and "
           "`pip install -e '.[dev]'` (no `playwright install`: the tests drive /usr/bin/chromium)")


class ThreadServer:
    """The service's app on uvicorn, 127.0.0.1, in a thread of this process."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.service = app.state.service
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, name="web-ui-test-server", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the service did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        """Cancel what still runs (jobs are process groups of their own), then stop the server."""
        store = self.service.store
        if store is not None:
            for job in store.in_state("queued", "running", "interrupted"):
                self.service.scheduler.cancel(job["id"])
        self.server.should_exit = True
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the service did not stop"


@pytest.fixture
def server(tmp_path, monkeypatch):
    served = ThreadServer(make_app(tmp_path / "root"))
    yield served
    served.stop()


@pytest.fixture(scope="module")
def chromium():
    """One Chromium for the module (a launch costs seconds); each test gets a context of its own."""
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def browser(chromium):
    """A fresh browser context (no cookie, storage or page of another test), closed after the test."""
    context = chromium.new_context()
    try:
        yield context
    finally:
        context.close()


def watched_page(browser):
    """A page that records dialogs (alert/confirm), uncaught errors and CSP violations reported on the console."""
    page = browser.new_page()
    seen = {"dialogs": [], "errors": [], "csp": []}
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("console", lambda m: "Content Security Policy" in m.text and seen["csp"].append(m.text))
    page.set_default_timeout(WAIT_MS)
    return page, seen


def test_playground_lints_as_you_type_then_compares_and_shows_the_flips(server, browser):
    page, seen = watched_page(browser)
    page.goto(f"{server.url}/ui/playground")
    field = page.locator('textarea[data-principle="harm-general"][data-field="compare"]')
    error = page.locator('.field-error[data-principle="harm-general"][data-field="compare"]')
    field.fill("Which of these responses is less harmful, {{ assistant }")
    expect(error).to_be_visible()
    expect(error).to_contain_text("harm-general.compare: Jinja syntax error")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#lint-status")).to_have_class("lint-status error")
    field.fill("Which of these responses would {{ assistant }} be least ashamed of?")
    expect(page.locator("#lint-status")).to_contain_text("loads: harmless-helpful")
    expect(error).to_be_hidden()
    page.locator('details[data-id="harm-bias"] summary').click()
    page.locator('textarea[data-principle="harm-bias"][data-field="compare"]').fill(
        "Which of these responses is the fairest to everyone it mentions?")
    expect(page.locator("#lint-status")).to_contain_text("loads:")
    page.select_option("#engine", "fake")
    page.fill("#model", "fake-judge")
    page.fill("#limit", "8")
    page.click("#compare")
    expect(page.locator("#compare-job")).not_to_be_empty()
    expect(page.locator("#compare-log")).to_contain_text("[service] attempt 1 started")
    expect(page.locator("#ab-table")).to_be_visible()
    expect(page.locator("#compare-state")).to_have_text("succeeded")
    flips = page.locator("#flips tr.flip")
    assert flips.count() > 0
    first = flips.first.locator("td.response")
    assert first.count() == 2 and all(t.strip() for t in first.all_inner_texts())  # both replies, side by side
    assert "B − A" in page.locator("#ab-paired").inner_text()
    page.click("#save")
    expect(page.locator("#saved-version")).to_have_text("2")
    expect(page.locator("#versions")).to_contain_text("changed harm-general: compare")
    expect(page.locator("#versions")).to_contain_text("harmless-helpful-v2.yaml")
    assert not seen["dialogs"] and not seen["errors"] and not seen["csp"], seen


FAKE_RECIPE = f"""name: browser fake run
prompts: {DEMO_PROMPTS}
stages: [generate, judge]
engine: {{engine: fake, batch_size: 1}}
judge: {{engine: fake, batch_size: 1}}
"""


def test_submit_streams_the_log_and_cancel_changes_the_state(server, browser, monkeypatch):
    monkeypatch.setenv("RLAIF_FAKE_DELAY_S", "2")  # the job's fake engine: the job still runs when it is cancelled
    page, seen = watched_page(browser)
    page.goto(f"{server.url}/ui/submit")
    page.fill("#recipe", FAKE_RECIPE.replace(str(DEMO_PROMPTS), "/etc/passwd"))
    page.click("#submit")
    expect(page.locator("#recipe-error")).to_contain_text("prompts: /etc/passwd is outside the folders")
    assert page.url.endswith("/ui/submit")
    page.fill("#recipe", FAKE_RECIPE)
    page.click("#submit")
    page.wait_for_url("**/ui/jobs/*")
    expect(page.locator("#log")).to_contain_text("[service] attempt 1 started")
    expect(page.locator("#job-state")).to_have_text("running")
    expect(page.locator("#plan tr[data-stage=generate] .stage-state")).to_have_text("running")
    page.click("#cancel")
    expect(page.locator("#job-state")).to_have_text("cancelled")
    expect(page.locator("#retry")).to_be_enabled()
    expect(page.locator("#log")).to_contain_text("ended")
    job_id = page.url.rsplit("/", 1)[1]
    assert server.service.store.get(job_id)["state"] == "cancelled"
    assert not seen["dialogs"] and not seen["errors"] and not seen["csp"], seen


def test_pages_holding_script_from_a_model_run_nothing(server, browser):
    service = server.service
    job = fake_job(service, name=f"job {HOSTILE}", state="failed")
    run = service.backend.job_dir(job) / "run"
    write_judge_run(run, 12, 12, 6, hostile=0)
    (run / "report.md").write_text(f"# Report\n\n{HOSTILE}\n\n<img src=x onerror=\"window.pwned=1\">\n")
    page, seen = watched_page(browser)
    for url in (f"/ui/jobs/{job}/data", f"/ui/jobs/{job}", "/ui/jobs"):
        page.goto(server.url + url)
        page.wait_for_load_state("load")
        assert page.evaluate("() => document.querySelectorAll('img[src=\"x\"], a[href^=\"javascript\"]').length") == 0
        assert page.evaluate("() => window.pwned === undefined")
        assert "<script>alert(1)</script>" in page.locator("main").inner_text()  # shown as text
    page.goto(f"{server.url}/ui/jobs/{job}")
    expect(page.locator("#log")).to_contain_text("<img src=x onerror=")  # the log streams as text too
    page.click("#log")
    assert not seen["dialogs"] and not seen["errors"] and not seen["csp"], seen
