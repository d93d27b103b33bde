// Renders every <div data-chart="id-of-json-script"> with the plotly.js the site serves.
(function () {
  "use strict";
  function render() {
    document.querySelectorAll("[data-chart]").forEach(function (el) {
      const source = document.getElementById(el.dataset.chart);
      if (!source || el.dataset.rendered) return;
      const fig = JSON.parse(source.textContent);
      // Maps read their base map from the site (never a CDN).
      window.Plotly.newPlot(el, fig.data, fig.layout,
        {responsive: true, displaylogo: false, topojsonURL: "/static/topojson/"});
      el.dataset.rendered = "1";
    });
  }
  window.renderCharts = render;
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", render);
  else render();
})();
