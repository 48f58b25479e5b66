// The playground: principle texts linted as you type (debounced POST /ui/api/lint), "Save as new version",
// and "Compare": an A/B job submitted to the service like any other (closing the page does not stop it),
// followed over its event stream until its result can be shown.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const editor = document.getElementById("editor");
  const constitution = editor.dataset.constitution;
  const lintStatus = document.getElementById("lint-status");
  const warnings = document.getElementById("lint-warnings");
  const actionStatus = document.getElementById("action-status");
  const areas = Array.from(editor.querySelectorAll("textarea[data-principle]"));
  let lintSeq = 0;
  let timer = null;
  let lintOk = true;

  function edits() {
    const out = {};
    for (const a of areas) {
      if (a.value !== a.dataset.original) {
        (out[a.dataset.principle] ||= {})[a.dataset.field] = a.value;
      }
    }
    return out;
  }

  function clearFieldErrors() {
    for (const el of editor.querySelectorAll(".field-error")) {
      el.textContent = "";
      el.hidden = true;
    }
    for (const a of areas) a.removeAttribute("aria-invalid");
  }

  function markEdited() {
    const changed = edits();
    for (const d of editor.querySelectorAll("details.principle")) {
      d.querySelector(".edited").hidden = !(d.dataset.id in changed);
    }
  }

  async function lint() {
    const seq = ++lintSeq;
    const result = await rlaif.call("/ui/api/lint", {method: "POST", json: {constitution, edits: edits()}});
    if (seq !== lintSeq) return; // a later keystroke's answer is coming
    clearFieldErrors();
    warnings.replaceChildren();
    if (!result.ok) {
      lintOk = false;
      rlaif.say(lintStatus, rlaif.errorLine(result), true);
      return;
    }
    const v = result.data;
    lintOk = v.ok;
    if (!v.ok) {
      rlaif.say(lintStatus, v.error, true);
      const sel = `[data-principle="${CSS.escape(v.principle || "")}"][data-field="${CSS.escape(v.field || "")}"]`;
      const slot = editor.querySelector(`.field-error${sel}`);
      if (slot) {
        slot.textContent = v.error;
        slot.hidden = false;
        editor.querySelector(`textarea${sel}`).setAttribute("aria-invalid", "true");
        slot.closest("details").open = true;
      }
      return;
    }
    rlaif.say(lintStatus, `loads: ${v.name} v${v.version}, sha256 ${v.sha256.slice(0, 16)}…` +
      (v.warnings.length ? `, ${v.warnings.length} warning(s)` : ", no warnings"));
    for (const w of v.warnings) {
      const li = document.createElement("li");
      li.textContent = w;
      warnings.append(li);
    }
  }

  for (const a of areas) {
    a.addEventListener("input", () => {
      markEdited();
      clearTimeout(timer);
      timer = setTimeout(lint, 300);
    });
  }

  // --- choosing and uploading files -------------------------------------------------------------------------
  const pick = document.getElementById("pick");
  const uploadStatus = document.getElementById("upload-status");
  document.getElementById("constitution").addEventListener("change", () => pick.submit());
  document.getElementById("upload-constitution").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    rlaif.say(uploadStatus, `uploading ${file.name}…`);
    try {
      const path = await rlaif.upload(file);
      const params = new URLSearchParams({constitution: path, sample: document.getElementById("sample").value});
      window.location.assign(`/ui/playground?${params}`);
    } catch (err) {
      rlaif.say(uploadStatus, err.message, true);
    }
  });
  document.getElementById("upload-sample").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    rlaif.say(uploadStatus, `uploading ${file.name}…`);
    try {
      const path = await rlaif.upload(file);
      const option = new Option(file.name, path, true, true);
      document.getElementById("sample").append(option);
      rlaif.say(uploadStatus, `uploaded ${file.name}`);
    } catch (err) {
      rlaif.say(uploadStatus, err.message, true);
    }
  });

  // --- save -------------------------------------------------------------------------------------------------
  document.getElementById("save").addEventListener("click", async () => {
    rlaif.say(actionStatus, "saving…");
    const result = await rlaif.call("/ui/api/save", {method: "POST", json: {constitution, edits: edits()}});
    if (!result.ok) {
      rlaif.say(actionStatus, rlaif.errorLine(result), true);
      return;
    }
    const s = result.data;
    rlaif.say(actionStatus, s.written ? "saved" : "this text was saved before: the same file");
    document.getElementById("saved-path").textContent = s.path;
    document.getElementById("saved-version").textContent = String(s.version);
    document.getElementById("saved-sha").textContent = s.sha256;
    document.getElementById("saved").hidden = false;
    await rlaif.swapFragment(document.getElementById("versions"),
      `/ui/playground/versions?constitution=${encodeURIComponent(constitution)}`);
  });

  // --- compare ----------------------------------------------------------------------------------------------
  const result = document.getElementById("compare-result");
  const jobLink = document.getElementById("compare-job");
  const jobState = document.getElementById("compare-state");
  const jobLog = document.getElementById("compare-log");
  const ab = document.getElementById("ab");

  function judgeOptions() {
    const num = (id) => Number(document.getElementById(id).value);
    return {engine: document.getElementById("engine").value, model: document.getElementById("model").value,
            principles_per_pair: num("principles-per-pair"), seed: num("seed")};
  }

  function followCompare(jobId) {
    result.hidden = false;
    jobLink.textContent = jobId;
    jobLink.href = `/ui/jobs/${encodeURIComponent(jobId)}`;
    jobLog.textContent = "";
    ab.replaceChildren();
    rlaif.follow(jobId, {
      onLog: (line) => jobLog.append(line + "\n"),
      onState: async (job) => {
        rlaif.setState(jobState, job.state);
        if (job.state === "succeeded") {
          await rlaif.swapFragment(ab, `/ui/jobs/${encodeURIComponent(jobId)}/ab?fragment=1`);
        } else if (rlaif.ENDED.includes(job.state)) {
          const p = document.createElement("p");
          p.className = "error";
          p.textContent = job.error || `the job ${job.state}`;
          ab.replaceChildren(p);
        }
      },
    });
  }

  document.getElementById("compare").addEventListener("click", async () => {
    if (!lintOk) {
      rlaif.say(actionStatus, "fix the constitution first (the error above)", true);
      return;
    }
    rlaif.say(actionStatus, "submitting the A/B job…");
    const limit = document.getElementById("limit").value;
    const draft = await rlaif.call("/ui/api/compare", {method: "POST", json: {
      constitution, edits: edits(), sample: document.getElementById("sample").value,
      limit: limit ? Number(limit) : null, judge: judgeOptions()}});
    if (!draft.ok) {
      rlaif.say(actionStatus, rlaif.errorLine(draft), true);
      return;
    }
    const job = await rlaif.call("/api/v1/jobs", {method: "POST", json: {recipe: draft.data.recipe}});
    if (!job.ok) {
      rlaif.say(actionStatus, rlaif.errorLine(job), true);
      return;
    }
    rlaif.say(actionStatus, `A/B job ${job.data.id} queued; it runs on whether or not this page stays open`);
    followCompare(job.data.id);
  });
});
