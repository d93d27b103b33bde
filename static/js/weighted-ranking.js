// The weighted ranking (/b/<slug>/weighted/): moving a slider re-sums each row's points under the
// new weights (Dynascore: sum of w * points / sum of w; the server computed the points), reorders
// the rows and puts the weights in the address, so the link reloads to the same ranking.
(function () {
  "use strict";
  const form = document.getElementById("weights");
  const dataNode = document.getElementById("weighted-data");
  const table = document.getElementById("weighted");
  if (!form || !dataNode || !table) return;
  const data = JSON.parse(dataNode.textContent);
  const body = table.tBodies[0];
  const trs = new Map(Array.from(body.rows).map((tr) => [tr.dataset.row, tr]));
  const sliders = Array.from(form.querySelectorAll('input[type="range"][data-metric]'));

  function weights() {
    const w = {};
    sliders.forEach((el) => { w[el.dataset.metric] = Number(el.value); });
    return w;
  }

  function score(row, w) {
    // The same order of summation as leaderboard/boards/dynascore.py's weighted().
    let total = 0, sum = 0;
    data.metrics.forEach((key) => { total += w[key] || 0; });
    if (total === 0) return null;
    data.metrics.forEach((key) => { sum += (w[key] || 0) * row.points[key]; });
    return sum / total;
  }

  function address(w) {
    const params = new URLSearchParams();
    data.metrics.forEach((key) => { params.set("w_" + key, String(w[key])); });
    if (document.getElementById("rank-reported").checked) params.set("reported", "ranked");
    return window.location.pathname + "?" + params.toString();
  }

  function rerank() {
    const w = weights();
    sliders.forEach((el) => {
      const out = form.querySelector('output[data-for="' + el.dataset.metric + '"]');
      if (out) out.textContent = el.value;
    });
    const scored = data.rows.map((row) => ({ row: row, score: score(row, w) }));
    scored.sort((a, b) => {
      const sa = a.score === null ? 0 : a.score, sb = b.score === null ? 0 : b.score;
      if (sa !== sb) return sb - sa;
      if (a.row.performance !== b.row.performance) return b.row.performance - a.row.performance;
      return a.row.name < b.row.name ? -1 : a.row.name > b.row.name ? 1 : 0;
    });
    scored.forEach((item, i) => {
      const tr = trs.get(item.row.id);
      tr.querySelector('[data-col="rank"]').textContent = String(i + 1);
      tr.querySelector('[data-col="score"]').textContent = item.score === null ? "–" : item.score.toFixed(2);
      body.appendChild(tr);
    });
    window.history.replaceState(null, "", address(w));
  }

  sliders.forEach((el) => el.addEventListener("input", rerank));
  // Ranking reported claims changes every rate of substitution: the server recomputes them.
  document.getElementById("rank-reported").addEventListener("change", () => {
    window.location.assign(address(weights()));
  });
  document.getElementById("apply-weights").style.display = "none";  // the sliders act at once
})();
