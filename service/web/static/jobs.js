// The jobs page: the table is re-read every few seconds (the same server-rendered fragment).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("jobs");
  const filter = document.getElementById("state-filter");
  filter.addEventListener("change", () => filter.form.submit());
  setInterval(() => rlaif.swapFragment(box, box.dataset.refresh), 3000);
});
