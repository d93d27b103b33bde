// The submit form: show only the warnings of the benchmark chosen (all are shown without scripts).
(function () {
  "use strict";
  const select = document.getElementById("id_benchmark");
  const notes = document.querySelectorAll("#benchmark-notes li[data-benchmark]");
  if (!select || !notes.length) return;
  function show() {
    notes.forEach((li) => { li.hidden = li.dataset.benchmark !== select.value; });
  }
  select.addEventListener("change", show);
  show();
})();
