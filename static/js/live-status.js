// Keeps a submission page current without reloading: polls its status.json until it ends.
(function () {
  "use strict";
  const root = document.getElementById("live");
  if (!root) return;
  const ENDED = ["finished", "failed", "rejected"];
  // the sandboxed-loop label as the server renders it (templates/boards/partials/_loop_in_sandbox_tag.html)
  const loopTemplate = document.getElementById("loop-in-sandbox-tag");
  const LOOP_TAG = loopTemplate ? loopTemplate.innerHTML.trim() : "";
  const fmt = (v) => (v === undefined || v === null) ? "–" :
    (Math.abs(v) >= 1e5 || (v !== 0 && Math.abs(v) < 1e-3)) ? v.toExponential(3) : String(+v.toPrecision(4));
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

  function render(doc) {
    const status = document.getElementById("status");
    status.textContent = doc.status;
    status.className = "status status-" + doc.status;
    document.getElementById("progress").value = doc.progress;
    document.getElementById("progress-text").textContent = doc.jobs_done + " / " + doc.jobs_total + " tasks done";
    const error = document.getElementById("error");
    error.hidden = !doc.error_message;
    error.textContent = doc.error_message || "";
    const body = document.querySelector("#jobs tbody");
    body.innerHTML = doc.jobs.map((job) => {
      const metrics = Object.entries(job.metrics).map(([k, v]) => "<span>" + esc(k) + " = " + fmt(v) + "</span>").join(" ");
      // as the template: the kind and its one-line summary; owners and staff also get the whole
      // message and the log tail, which the server leaves out for anyone else
      const err = job.error_kind ? '<div class="error">' + esc(job.error_kind) + ": " + esc(job.error_summary) + "</div>" : "";
      const details = job.error_kind && (job.log_tail || job.error_message !== job.error_summary) ?
        '<details class="error-details"><summary>Details (only the owner and staff see these)</summary><pre>' +
        esc(job.error_message) + "</pre>" + (job.log_tail ? '<pre class="log-tail">' + esc(job.log_tail) + "</pre>" : "") +
        "</details>" : "";
      const prog = job.outcome ? '<span class="outcome">' + esc(job.outcome) + "</span>" :
        Math.round(job.progress * 100) + "% " + esc(job.progress_message) +
        (job.waiting_reason ? '<div class="waiting" data-code="' + esc(job.waiting_code) + '">waiting: ' + esc(job.waiting_reason) + "</div>" : "");
      // the labels the template puts beside the task (templates/submissions/detail.html)
      const tags = (job.synthetic_data ? ' <span class="tag warn">synthetic data</span>' : "") +
        (job.loop_in_sandbox ? " " + LOOP_TAG : "");
      return '<tr data-job="' + job.id + '"><td>' + esc(job.task) + tags + '</td><td class="state">' + esc(job.state) +
        (job.attempt > 1 ? " (attempt " + job.attempt + ")" : "") + '</td><td class="prog">' + prog +
        '</td><td class="num primary">' +
        fmt(job.metrics[job.primary_metric]) + '</td><td class="metrics">' + metrics + err + details + "</td></tr>";
    }).join("");
    return ENDED.includes(doc.status);
  }

  async function poll() {
    try {
      const response = await fetch(root.dataset.url, {headers: {"Accept": "application/json"}});
      if (response.ok && render(await response.json())) return;
    } catch (e) { /* transient: try again */ }
    setTimeout(poll, 1500);
  }
  // The page may come from the visitors' cache, rendered before the last heartbeat: an active
  // submission's live part is asked for at once, then polled until it ends.
  if (!ENDED.includes(document.getElementById("status").textContent.trim())) poll();
})();
