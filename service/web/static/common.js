// Shared by every page: requests that carry the page's CSRF token, and small DOM helpers.
// Model and user text is only ever put into the page with textContent (never innerHTML of such text).
"use strict";

const rlaif = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  // fetch with the CSRF header; resolves to {ok, status, data} where data is parsed JSON when the reply is JSON.
  async function call(url, {method = "GET", json, body, headers = {}} = {}) {
    const opts = {method, headers: {"X-CSRF-Token": csrf(), ...headers}, credentials: "same-origin"};
    if (json !== undefined) {
      opts.body = JSON.stringify(json);
      opts.headers["Content-Type"] = "application/json";
    } else if (body !== undefined) {
      opts.body = body;
    }
    let response;
    try {
      response = await fetch(url, opts);
    } catch (e) {
      return {ok: false, status: 0, data: {error: `the service did not answer (${e.message})`}};
    }
    const type = response.headers.get("content-type") || "";
    const data = type.includes("application/json") ? await response.json() : await response.text();
    return {ok: response.ok, status: response.status, data};
  }

  function errorLine(result) {
    if (result.data && typeof result.data === "object" && result.data.error) return result.data.error;
    return `HTTP ${result.status}`;
  }

  function say(el, text, isError = false) {
    if (!el) return;
    el.textContent = text;
    el.classList.toggle("error", Boolean(isError));
  }

  // Put server-rendered HTML (a fragment of one of our autoescaped templates) into el. Parsed as an inert
  // document: nothing in it runs (and the page's CSP allows no inline script anyway).
  async function swapFragment(el, url) {
    const result = await call(url);
    if (!result.ok || typeof result.data !== "string") return false;
    const doc = new DOMParser().parseFromString(result.data, "text/html");
    el.replaceChildren(...Array.from(doc.body.childNodes).map((n) => document.importNode(n, true)));
    return true;
  }

  // Upload a file's bytes to the service (POST /api/v1/uploads); resolves to the stored path or throws a line.
  async function upload(file) {
    const name = file.name.replace(/[^A-Za-z0-9._-]/g, "_").replace(/^[._-]+/, "") || "upload";
    const result = await call(`/api/v1/uploads?name=${encodeURIComponent(name)}`, {method: "POST", body: file});
    if (!result.ok) throw new Error(errorLine(result));
    return result.data.path;
  }

  const ENDED = ["succeeded", "failed", "cancelled"];

  // Follow a job's event stream: onLog(line) per log line, onState(job) per state change. The browser's
  // EventSource reconnects by itself with Last-Event-ID (the byte offset after the last line it got), so
  // a dropped connection loses and repeats nothing; once the job has ended the stream is closed.
  function follow(jobId, {onLog, onState}) {
    const source = new EventSource(`/api/v1/jobs/${encodeURIComponent(jobId)}/events`);
    source.addEventListener("log", (e) => onLog(e.data));
    source.addEventListener("state", (e) => {
      const job = JSON.parse(e.data);
      onState(job);
      if (ENDED.includes(job.state)) source.close();
    });
    return source;
  }

  function setState(el, state) {
    el.textContent = state;
    el.className = `state state-${state}`;
  }

  return {call, errorLine, say, swapFragment, upload, follow, setState, ENDED};
})();
