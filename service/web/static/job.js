// A job's page: the live log (SSE), its state and per-stage progress, cancel and retry.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("job");
  const jobId = root.dataset.jobId;
  const log = document.getElementById("log");
  const stateEl = document.getElementById("job-state");
  const status = document.getElementById("action-status");
  const cancel = document.getElementById("cancel");
  const retry = document.getElementById("retry");
  let source = null;
  let reloadWhenEnded = !rlaif.ENDED.includes(root.dataset.state);

  function showStages(job) {
    if (root.dataset.ab) return; // an A/B job's one stage is rendered by the page (the API reads pipeline stages)
    for (const [stage, s] of Object.entries(job.stages || {})) {
      const row = document.querySelector(`#plan tr[data-stage="${CSS.escape(stage)}"]`);
      if (!row) continue;
      const cell = row.querySelector(".stage-state span");
      cell.textContent = s.state;
      cell.className = `stage stage-${s.state}`;
      row.querySelector(".stage-seconds").textContent = s.seconds === null ? "" : String(s.seconds);
      row.querySelector(".stage-counts").textContent =
        Object.entries(s.counts || {}).map(([k, v]) => `${k} ${v}`).join(", ");
    }
  }

  function onState(job) {
    rlaif.setState(stateEl, job.state);
    root.dataset.state = job.state;
    document.getElementById("job-attempt").textContent = String(job.attempt);
    const err = document.getElementById("job-error");
    err.textContent = job.error || "";
    err.hidden = !job.error;
    showStages(job);
    const ended = rlaif.ENDED.includes(job.state);
    cancel.disabled = ended;
    retry.disabled = !ended;
    document.getElementById("log-status").textContent = ended ? "the job has ended" : "following the log";
    if (ended && reloadWhenEnded) {
      reloadWhenEnded = false;
      // the report, the A/B result and the files are rendered by the server: show them
      setTimeout(() => window.location.reload(), 500);
    }
  }

  function start() {
    if (source) source.close();
    log.textContent = "";
    source = rlaif.follow(jobId, {onLog: (line) => log.append(line + "\n"), onState});
  }

  async function act(what) {
    rlaif.say(status, `${what}…`);
    const result = await rlaif.call(`/api/v1/jobs/${encodeURIComponent(jobId)}/${what}`, {method: "POST"});
    if (!result.ok) {
      rlaif.say(status, rlaif.errorLine(result), true);
      return;
    }
    rlaif.say(status, "");
    onState(result.data);
    if (what === "retry") {
      reloadWhenEnded = true;
      start();
    }
  }

  // The event stream says when the job's state changes; per-stage progress changes in between, so while the
  // job has not ended its record is read again every two seconds.
  async function poll() {
    if (!rlaif.ENDED.includes(root.dataset.state)) {
      const result = await rlaif.call(`/api/v1/jobs/${encodeURIComponent(jobId)}`);
      if (result.ok && typeof result.data === "object") onState(result.data);
    }
    setTimeout(poll, 2000);
  }

  cancel.addEventListener("click", () => act("cancel"));
  retry.addEventListener("click", () => act("retry"));
  start();
  setTimeout(poll, 2000);
});
