// The submit page: a bundled or local recipe into the textarea, prompts uploaded, the recipe submitted; a
// refusal is the service's one line (its 422), shown under the recipe.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const recipe = document.getElementById("recipe");
  const error = document.getElementById("recipe-error");
  const uploadStatus = document.getElementById("upload-status");
  const submitStatus = document.getElementById("submit-status");

  function showError(line) {
    error.textContent = line || "";
    error.hidden = !line;
  }

  document.getElementById("bundled").addEventListener("change", async (e) => {
    if (!e.target.value) return;
    const result = await rlaif.call(`/ui/submit/recipe?name=${encodeURIComponent(e.target.value)}`);
    if (result.ok) recipe.value = result.data;
    else showError(rlaif.errorLine(result));
  });

  document.getElementById("recipe-file").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (file) recipe.value = await file.text();
  });

  document.getElementById("prompts-file").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    rlaif.say(uploadStatus, `uploading ${file.name}…`);
    try {
      const path = await rlaif.upload(file);
      const line = `prompts: ${JSON.stringify(path)}`;
      recipe.value = /^prompts:.*$/m.test(recipe.value)
        ? recipe.value.replace(/^prompts:.*$/m, line) : `${line}\n${recipe.value}`;
      rlaif.say(uploadStatus, `uploaded: ${path} (set as the recipe's prompts)`);
    } catch (err) {
      rlaif.say(uploadStatus, err.message, true);
    }
  });

  document.getElementById("submit-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    showError("");
    rlaif.say(submitStatus, "checking the recipe…");
    const result = await rlaif.call("/api/v1/jobs", {method: "POST", json: {recipe: recipe.value}});
    if (!result.ok) {
      rlaif.say(submitStatus, "");
      showError(rlaif.errorLine(result));
      return;
    }
    window.location.assign(`/ui/jobs/${encodeURIComponent(result.data.id)}`);
  });
});
