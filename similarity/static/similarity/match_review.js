// Review page of a supplier match run (admin/similarity/matchrun_review.html): decisions are
// posted in place (the row and the counts update, the next photo becomes current) and keys
// decide for the current photo. Without this script the forms post and the page reloads.
(function () {
  "use strict";
  const rows = Array.from(document.querySelectorAll("#match-results .match-row"));
  if (!rows.length) return;
  let current = 0;

  function select(index, scroll) {
    current = Math.max(0, Math.min(rows.length - 1, index));
    rows.forEach((row, i) => row.classList.toggle("current", i === current));
    if (scroll) rows[current].scrollIntoView({block: "nearest"});
  }

  function showError(row, message) {
    let note = row.querySelector(".match-decision-error");
    if (!note) {
      note = document.createElement("span");
      note.className = "match-decision-error";
      row.querySelector(".match-supplier").appendChild(note);
    }
    note.textContent = message;
  }

  function applied(row, data) {
    row.dataset.decision = data.decision || "undecided";
    row.querySelector(".match-decision").textContent = data.label;
    const by = row.querySelector(".decided-by");
    if (by) by.remove();
    const error = row.querySelector(".match-decision-error");
    if (error) error.remove();
    row.querySelectorAll(".match-candidate").forEach((card) => {
      card.classList.toggle("chosen", !!data.article_id && card.dataset.article === data.article_id);
    });
    for (const [name, count] of Object.entries(data.counts)) {
      const cell = document.getElementById("count-" + name);
      if (cell) cell.textContent = count;
    }
  }

  function decide(row, button) {
    if (!button) return;
    const form = button.form;
    const body = new FormData(form);
    body.set(button.name, button.value);
    row.classList.add("busy");
    fetch(form.action, {
      method: "POST", body: body, credentials: "same-origin",
      headers: {"Accept": "application/json",
                "X-CSRFToken": form.querySelector("[name=csrfmiddlewaretoken]").value},
    }).then((response) => response.json().catch(() => ({error: "HTTP " + response.status}))
      .then((data) => {
        row.classList.remove("busy");
        if (!response.ok || data.error) { showError(row, data.error || "HTTP " + response.status); return; }
        applied(row, data);
        if (rows.indexOf(row) === current && button.value !== "undo") select(current + 1, true);
      }))
      .catch((error) => { row.classList.remove("busy"); showError(row, String(error)); });
  }

  rows.forEach((row, index) => {
    row.addEventListener("click", () => select(index, false));
    const form = row.querySelector("form.decide-form");
    if (form) {
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        select(index, false);
        decide(row, event.submitter);
      });
    }
  });

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest("input, textarea, select, [contenteditable]")) return;
    const row = rows[current];
    const key = event.key;
    let button = null;
    if (key === "j") select(current + 1, true);
    else if (key === "k") select(current - 1, true);
    else if (/^[1-9]$/.test(key)) button = row.querySelector('.decide-confirm[data-candidate="' + key + '"]');
    else if (key === "n") button = row.querySelector(".decide-new");
    else if (key === "s") button = row.querySelector(".decide-skip");
    else if (key === "u" && row.dataset.decision !== "undecided") button = row.querySelector(".decide-undo");
    else return;
    event.preventDefault();
    decide(row, button);
  });

  select(0, false);
})();
